"""How well the extractor labels headlines: load a labelled CSV, score it, and compute plain metrics.

The labelled set is Twitter Financial News (`text,label`, label 0 bearish, 1 bullish, 2 neutral). The model
scores coins, the set labels whole headlines, so the headline's label is read off the scores as the sign
of their confidence-weighted mean (no scores: neutral).
"""

from __future__ import annotations

import csv
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic_ai import Agent

from cryptopredict.sentiment.extractor import (
    HeadlineSentiment,
    SentimentOutputInvalid,
    model_name,
    score_headline,
)

# Twitter Financial News label ids -> our score scale.
LABEL_TO_SCORE: dict[int, int] = {0: -1, 1: 1, 2: 0}
CLASSES: tuple[int, ...] = (-1, 0, 1)

Scorer = Callable[[str], Awaitable[HeadlineSentiment]]


def load_labelled(path: Path | str, limit: int | None = None, seed: int = 0) -> list[tuple[str, int]]:
    """Rows `(text, score)` with score in -1/0/1; with `limit`, a seeded random sample (same seed, same rows)."""
    rows: list[tuple[str, int]] = []
    with Path(path).open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        for line, record in enumerate(reader, start=2):
            try:
                label = LABEL_TO_SCORE[int(record["label"])]
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(
                    f"{path}:{line}: label must be 0, 1 or 2, got {record.get('label')!r}"
                ) from exc
            rows.append((record["text"], label))
    if limit is not None and limit < len(rows):
        rows = random.Random(seed).sample(rows, limit)
    return rows


def headline_score(result: HeadlineSentiment) -> int:
    """-1/0/1 for the whole headline: sign of the confidence-weighted mean score (plain mean if all
    confidences are 0); no scores is neutral."""
    if not result.scores:
        return 0
    weight = sum(s.confidence for s in result.scores)
    if weight > 0:
        total = sum(s.score * s.confidence for s in result.scores)
    else:
        total = float(sum(s.score for s in result.scores))
    return (total > 0) - (total < 0)


def accuracy(truth: Sequence[int], predicted: Sequence[int | None]) -> float:
    """Share of exact matches; a missing prediction (None, invalid output) counts as wrong."""
    if len(truth) != len(predicted):
        raise ValueError("truth and predicted differ in length")
    if not truth:
        return 0.0
    return sum(t == p for t, p in zip(truth, predicted, strict=True)) / len(truth)


def macro_f1(
    truth: Sequence[int], predicted: Sequence[int | None], classes: Sequence[int] = CLASSES
) -> float:
    """Unweighted mean of per-class F1 over the classes that occur in truth or predictions.

    A missing prediction is a miss for its true class and a false positive for no class.
    """
    if len(truth) != len(predicted):
        raise ValueError("truth and predicted differ in length")
    present = [c for c in classes if c in truth or c in predicted]
    if not present:
        return 0.0
    f1s = []
    for c in present:
        tp = sum(t == c and p == c for t, p in zip(truth, predicted, strict=True))
        fp = sum(t != c and p == c for t, p in zip(truth, predicted, strict=True))
        fn = sum(t == c and p != c for t, p in zip(truth, predicted, strict=True))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return sum(f1s) / len(f1s)


async def evaluate(
    agent_or_callable: Agent[None, HeadlineSentiment] | Scorer,
    rows: Sequence[tuple[str, int]],
    *,
    model: str | None = None,
) -> dict[str, Any]:
    """Score every row in turn and return {model, items, valid_rate, accuracy, macro_f1, s_per_item}.

    An invalid output (`SentimentOutputInvalid`) lowers valid_rate and counts as a wrong prediction;
    any other error (server down) propagates, since it says nothing about the model's quality.
    """
    scorer: Scorer
    if isinstance(agent_or_callable, Agent):
        agent = agent_or_callable

        async def score_with_agent(text: str) -> HeadlineSentiment:
            return await score_headline(agent, text)

        scorer, name = score_with_agent, model or model_name(agent)
    else:
        scorer = agent_or_callable
        name = model or str(getattr(agent_or_callable, "__name__", "callable"))
    truth = [label for _, label in rows]
    predicted: list[int | None] = []
    start = time.perf_counter()
    for text, _ in rows:
        try:
            predicted.append(headline_score(await scorer(text)))
        except SentimentOutputInvalid:
            predicted.append(None)
    elapsed = time.perf_counter() - start
    n = len(rows)
    return {
        "model": name,
        "items": n,
        "valid_rate": (sum(p is not None for p in predicted) / n) if n else 0.0,
        "accuracy": accuracy(truth, predicted),
        "macro_f1": macro_f1(truth, predicted),
        "s_per_item": (elapsed / n) if n else 0.0,
    }
