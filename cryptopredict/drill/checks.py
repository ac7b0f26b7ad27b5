"""What a drilled run left in the store and the topics, compared with what the seeded replay's
uninterrupted run makes: lost and duplicated keys per kind of record."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptopredict.drill.expected import Difference, compare_keys, differing_values, expected_keys
from cryptopredict.kafka_admin import read_topic
from cryptopredict.models import Candle, IndicatorRow, Prediction, Trade
from cryptopredict.settings import Settings
from cryptopredict.store.schema import candles, predictions, technical_indicators
from cryptopredict.topics import CANDLES, PREDICTIONS, TECHNICAL_INDICATORS, topic_name


@dataclass
class Findings:
    """Per kind of record (candles, indicator rows, predictions, ledger rows): what differs from the
    uninterrupted run; and the failed checks, each a sentence."""

    differences: dict[str, Difference] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return sum(len(d.lost) for d in self.differences.values())

    @property
    def duplicated(self) -> int:
        return sum(len(d.duplicated) for d in self.differences.values())

    def summary(self, what: str) -> str:
        parts = [
            f"{len(getattr(d, what))} {kind}" for kind, d in self.differences.items() if getattr(d, what)
        ]
        return ", ".join(parts) or "0"


async def stored_keys(engine: AsyncEngine, pairs: Sequence[str]) -> dict[str, list[tuple[Any, ...]]]:
    """Every stored candle, indicator row and prediction key of `pairs` (a key per row)."""
    async with engine.connect() as conn:
        stored = [
            tuple(r)
            for r in await conn.execute(
                select(candles.c.pair, candles.c.interval_s, candles.c.window_start).where(
                    candles.c.pair.in_(pairs)
                )
            )
        ]
        indicator_rows = [
            tuple(r)
            for r in await conn.execute(
                select(
                    technical_indicators.c.pair,
                    technical_indicators.c.interval_s,
                    technical_indicators.c.window_start,
                ).where(technical_indicators.c.pair.in_(pairs))
            )
        ]
        forecasts = [
            tuple(r)
            for r in await conn.execute(
                select(
                    predictions.c.pair,
                    predictions.c.interval_s,
                    predictions.c.feature_time,
                    predictions.c.horizon_s,
                    predictions.c.model_name,
                    predictions.c.model_version,
                ).where(predictions.c.pair.in_(pairs))
            )
        ]
        ledger = [
            tuple(r)
            for r in await conn.execute(
                text(
                    "SELECT pair, interval_s, feature_time, horizon_s, model_name, model_version"
                    " FROM prediction_outcomes WHERE pair = ANY(:pairs)"
                ),
                {"pairs": list(pairs)},
            )
        ]
    return {"candles": stored, "indicators": indicator_rows, "predictions": forecasts, "ledger": ledger}


def prediction_differences(
    expected: set[tuple[str, int, datetime]], forecasts: Sequence[tuple[Any, ...]], horizon_s: int
) -> Difference:
    """One prediction per (model version, candle, horizon): a candle of the forecast interval with none is
    lost; a candle predicted twice by one version is duplicated."""
    wanted = {(pair, interval_s, start, horizon_s) for pair, interval_s, start in expected}
    by_version = [
        (pair, interval_s, start, horizon, name, version)
        for pair, interval_s, start, horizon, name, version in forecasts
    ]
    found = {(p, i, s, h) for p, i, s, h, _, _ in by_version}
    per_version = compare_keys(set(), by_version)
    return Difference(
        lost=frozenset(wanted - found), duplicated=per_version.duplicated, extra=frozenset(found - wanted)
    )


def ledger_differences(
    forecasts: Sequence[tuple[Any, ...]],
    ledger: Sequence[tuple[Any, ...]],
    last_close: datetime,
    interval_s: int,
) -> Difference:
    """A ledger row for each prediction whose target candle has closed (`last_close`: the end of the last
    closed window)."""
    due = [
        f
        for f in forecasts
        if f[1] == interval_s and f[2] + timedelta(seconds=interval_s) + timedelta(seconds=f[3]) <= last_close
    ]
    return compare_keys(due, [row for row in ledger if row in set(due)])


async def store_findings(
    settings: Settings,
    engine: AsyncEngine,
    trades: Sequence[Trade],
    pairs: Sequence[str],
    intervals_s: Sequence[int],
    forecast_interval_s: int,
    horizon_s: int,
) -> Findings:
    expected = expected_keys(trades, pairs, intervals_s, settings.features.grace_s)
    stored = await stored_keys(engine, pairs)
    findings = Findings()
    findings.differences["candles"] = compare_keys(expected, stored["candles"])
    findings.differences["indicator rows"] = compare_keys(expected, stored["indicators"])
    minute = {k for k in expected if k[1] == forecast_interval_s}
    findings.differences["predictions"] = prediction_differences(minute, stored["predictions"], horizon_s)
    last_close = max(start for _, i, start in minute) + timedelta(seconds=forecast_interval_s)
    findings.differences["ledger rows"] = ledger_differences(
        stored["predictions"], stored["ledger"], last_close, forecast_interval_s
    )
    return findings


async def topic_findings(kafka: Any, prefix: str) -> dict[str, frozenset[Any]]:
    """Keys emitted more than once with different values, per topic. A prediction's made_at is when it was
    made, so a prediction made again after a restart differs in it alone: that is not a different value."""
    found: dict[str, frozenset[Any]] = {}
    for kind, topic, model in (
        ("candles", CANDLES, Candle),
        ("indicator rows", TECHNICAL_INDICATORS, IndicatorRow),
    ):
        records = [
            model.model_validate_json(v) for v in await read_topic(kafka, topic_name(topic, prefix), idle_s=2)
        ]
        found[kind] = differing_values(
            ((r.pair, r.interval_s, r.window_start), r.model_dump_json()) for r in records
        )
    forecasts = [
        Prediction.model_validate_json(v)
        for v in await read_topic(kafka, topic_name(PREDICTIONS, prefix), idle_s=2)
    ]
    found["predictions"] = differing_values(
        (
            (p.pair, p.interval_s, p.feature_time, p.horizon_s, p.model_name, p.model_version),
            p.model_copy(update={"made_at": p.feature_time}).model_dump_json(),
        )
        for p in forecasts
    )
    return found
