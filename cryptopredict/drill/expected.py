"""What an uninterrupted run of a seeded replay makes, and how a drilled run differs from it: pure
functions over trades and keys, so they are tested without services."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptopredict.features.candles import CandleState
from cryptopredict.models import Candle, Trade

CandleKey = tuple[str, int, datetime]


def expected_candles(
    trades: Iterable[Trade], pairs: Sequence[str], intervals_s: Sequence[int], grace_s: float
) -> dict[int, list[Candle]]:
    """The candles the trades close, per interval: the last window of each pair stays open, as in the
    stream (no later trade closes it)."""
    trades = list(trades)
    expected: dict[int, list[Candle]] = {}
    for interval_s in intervals_s:
        for pair in pairs:
            state = CandleState(pair=pair, interval_s=interval_s, grace_s=grace_s)
            expected.setdefault(interval_s, []).extend(
                c for t in trades if t.pair == pair for c in state.add_trade(t)[0]
            )
    return expected


def expected_keys(
    trades: Iterable[Trade], pairs: Sequence[str], intervals_s: Sequence[int], grace_s: float
) -> set[CandleKey]:
    """(pair, interval_s, window_start) of every candle the trades close."""
    closed = expected_candles(trades, pairs, intervals_s, grace_s)
    return {(c.pair, c.interval_s, c.window_start) for cs in closed.values() for c in cs}


@dataclass(frozen=True)
class Difference:
    """Keys an uninterrupted run has and a drilled one has not (lost), keys the drilled run holds more than
    once (duplicated), and keys only the drilled run has (extra)."""

    lost: frozenset[Hashable]
    duplicated: frozenset[Hashable]
    extra: frozenset[Hashable]

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.extra)


def compare_keys(expected: Iterable[Hashable], found: Iterable[Hashable]) -> Difference:
    """`found` is every occurrence (a key found twice is listed twice)."""
    counts = Counter(found)
    wanted = set(expected)
    return Difference(
        lost=frozenset(wanted - counts.keys()),
        duplicated=frozenset(k for k, n in counts.items() if n > 1),
        extra=frozenset(counts.keys() - wanted),
    )


def differing_values(records: Iterable[tuple[Hashable, str]]) -> frozenset[Hashable]:
    """Keys emitted more than once with different values (`records`: key and a serialised value): a
    redelivery of the same record is harmless to an idempotent sink, two different values are not."""
    values: dict[Hashable, set[str]] = {}
    for key, value in records:
        values.setdefault(key, set()).add(value)
    return frozenset(k for k, v in values.items() if len(v) > 1)


def closed_by(trades: Sequence[Trade], until: datetime) -> list[Trade]:
    """The trades that happened up to `until` on the replay clock."""
    return [t for t in trades if t.timestamp <= until]
