"""Sentiment extraction quality and speed on labelled financial headlines.

Scores N seeded-random rows of ../shared/data/sentiment/twitter_financial_news_valid.csv with the agent of
`cryptopredict.sentiment` against the LLM endpoint in settings (CRYPTOPREDICT_LLM__BASE_URL to point it at
another server), one request at a time. Skips cleanly when the data set is absent.

Usage: .venv/bin/python bench/sentiment_eval.py [-n 50] [--seed 0]
Ends with one JSON line: {"model", "items", "valid_rate", "accuracy", "macro_f1", "s_per_item"}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import publish  # noqa: E402
from cryptopredict.sentiment.evaluation import evaluate, load_labelled  # noqa: E402
from cryptopredict.sentiment.extractor import build_agent  # noqa: E402
from cryptopredict.settings import get_settings  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "sentiment" / "twitter_financial_news_valid.csv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="20 items")
    parser.add_argument("-n", "--items", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"skipped: {args.data} not present", file=sys.stderr)
        print(json.dumps({"skipped": True}))
        return 0
    rows = load_labelled(args.data, limit=20 if args.quick else args.items, seed=args.seed)
    figures = asyncio.run(evaluate(build_agent(get_settings().llm), rows))
    neutral = sum(1 for _, label in rows if label == 0) / len(rows)
    body = f"""
Model `{figures["model"]}` at the configured endpoint, {figures["items"]} seeded-random labelled finance
headlines (../shared/data/sentiment, 0 bearish / 1 bullish / 2 neutral), one request at a time.
Always answering "neutral" would score accuracy {neutral:.2f} on these rows.

| valid structured output | accuracy | macro F1 | s per item |
|---|---|---|---|
| {figures["valid_rate"]:.0%} | {figures["accuracy"]:.3f} | {figures["macro_f1"]:.3f} | {figures["s_per_item"]:.2f} |
"""
    command = "python bench/sentiment_eval.py" + (" --quick" if args.quick else f" -n {args.items}")
    publish(f"Sentiment extraction: {figures['model']}", command, body, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
