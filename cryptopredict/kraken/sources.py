"""Where the replay exchange's trades come from: files of real trades, Kraken OHLCVT candles, or a
seeded synthetic market.

Every source yields `Trade`s whose `trade_id` is per pair (per book) and increases with trade time,
as Kraken's do, and whose `ingested_at` equals the event time (the feed sets its own on receipt).
"""

from __future__ import annotations

import csv
import math
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptopredict.models import Trade
from cryptopredict.topics import KRAKEN

SOURCES = ("synthetic", "trades-file", "ohlcvt")


# --- files of real trades -------------------------------------------------------------------------


def csv_trades(path: Path, pair: str) -> Iterator[Trade]:
    """Trades from a `timestamp,time_ms,side,price,qty` file (the format of ../shared/data/kraken),
    numbered 1.. in file order (the file is in time order)."""
    with path.open() as handle:
        for trade_id, row in enumerate(csv.DictReader(handle), start=1):
            ts = datetime.fromtimestamp(int(row["time_ms"]) / 1000, tz=UTC)
            yield Trade(
                pair=pair,
                trade_id=trade_id,
                price=float(row["price"]),
                qty=float(row["qty"]),
                side="buy" if row["side"] == "buy" else "sell",
                timestamp=ts,
                ingested_at=ts,
            )


def trades_file(path: Path, pair: str = "BTC/USD") -> list[Trade]:
    """Trades from a CSV or Parquet file, sorted by time.

    Columns: `timestamp` (datetime or ISO text) or `time_ms`, `side` (buy/sell or b/s), `price`,
    `qty`; optional `trade_id`, `pair` (else `pair` is used) and `ord_type`. The Trade model's own
    fields, as a recorder writes them, fit this. Missing trade_ids are numbered per pair in time order.
    """
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
    else:
        with path.open() as handle:
            rows = list(csv.DictReader(handle))
    return _number_per_pair([_row_fields(row, pair) for row in rows])


def _row_fields(row: dict[str, Any], default_pair: str) -> dict[str, Any]:
    if row.get("time_ms") not in (None, ""):
        ts = datetime.fromtimestamp(int(row["time_ms"]) / 1000, tz=UTC)
    else:
        ts = _as_utc(row["timestamp"])
    side = str(row["side"]).lower()
    trade_id = row.get("trade_id")
    return {
        # A recording holds its venue; other files, and recordings from before venues existed, are Kraken's.
        "exchange": row.get("exchange") or KRAKEN,
        "pair": default_pair if row.get("pair") in (None, "") or _is_nan(row.get("pair")) else row["pair"],
        "trade_id": None if trade_id in (None, "") or _is_nan(trade_id) else int(trade_id),
        "price": float(row["price"]),
        "qty": float(row["qty"]),
        "side": "buy" if side in ("buy", "b") else "sell",
        "ord_type": "market" if str(row.get("ord_type", "limit")).lower() in ("market", "m") else "limit",
        "timestamp": ts,
    }


def _as_utc(value: Any) -> datetime:
    ts = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return ts.astimezone(UTC) if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _number_per_pair(rows: list[dict[str, Any]]) -> list[Trade]:
    """Sort by time (stable: file order breaks ties) and give each pair ids 1.. where missing."""
    rows.sort(key=lambda r: r["timestamp"])
    next_id: dict[str, int] = {}
    trades = []
    for row in rows:
        trade_id = row["trade_id"]
        if trade_id is None:
            trade_id = next_id.get(row["pair"], 1)
        next_id[row["pair"]] = trade_id + 1
        trades.append(Trade(**(row | {"trade_id": trade_id}), ingested_at=row["timestamp"]))
    return trades


# --- Kraken OHLCVT candles -------------------------------------------------------------------------


@dataclass(frozen=True)
class OhlcvtRow:
    """One line of Kraken's OHLCVT download: `unix_seconds,open,high,low,close,volume,trades`."""

    time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    trades: int


def read_ohlcvt(
    path: Path, start: datetime | None = None, end: datetime | None = None
) -> Iterator[OhlcvtRow]:
    """Rows with `start <= time < end` (candle open times)."""
    lo = -math.inf if start is None else start.timestamp()
    hi = math.inf if end is None else end.timestamp()
    with path.open() as handle:
        for fields in csv.reader(handle):
            if not fields:
                continue
            t = int(fields[0])
            if t < lo:
                continue
            if t >= hi:
                return  # the file is in time order
            o, h, low, c, v = (float(x) for x in fields[1:6])
            yield OhlcvtRow(t, o, h, low, c, v, int(fields[6]))


def interval_from_name(path: Path) -> int:
    """`XBTUSD_60.csv` -> 3600: Kraken names OHLCVT files by interval in minutes."""
    match = re.search(r"_(\d+)$", path.stem)
    if match is None:
        raise ValueError(f"cannot tell the candle interval from {path.name}; pass interval_s")
    return int(match.group(1)) * 60


def ohlcvt_trades(
    path: Path,
    pair: str,
    interval_s: int | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    seed: int = 7,
) -> Iterator[Trade]:
    """Intra-candle trades synthesised so that the candle rebuilt from them has exactly the file's
    open, high, low, close and volume (and `trades` trades when that is at least what O/H/L/C need)."""
    interval = interval_s or interval_from_name(path)
    rng = random.Random(f"{seed}:{pair}:ohlcvt")
    next_id = 1
    for row in read_ohlcvt(path, start, end):
        trades = candle_trades(row, pair, interval, next_id, rng)
        next_id += len(trades)
        yield from trades


def candle_trades(
    row: OhlcvtRow, pair: str, interval_s: int, first_id: int, rng: random.Random
) -> list[Trade]:
    prices = _candle_prices(row, rng)
    quantities = _exact_split(row.volume, len(prices), rng)
    offsets_us = sorted(rng.sample(range(interval_s * 1_000_000), len(prices)))
    window = datetime.fromtimestamp(row.time, tz=UTC)
    trades = []
    for i, (price, qty, offset) in enumerate(zip(prices, quantities, offsets_us, strict=True)):
        ts = window + timedelta(microseconds=offset)
        # Tick rule: a trade above the previous one was most likely a buyer lifting the ask.
        up = price > prices[i - 1] if i else rng.random() < 0.5
        trades.append(
            Trade(
                pair=pair,
                trade_id=first_id + i,
                price=price,
                qty=qty,
                side="buy" if up else "sell",
                ord_type="market" if rng.random() < 0.7 else "limit",
                timestamp=ts,
                ingested_at=ts,
            )
        )
    return trades


def _candle_prices(row: OhlcvtRow, rng: random.Random) -> list[float]:
    """First = open, last = close, high and low each hit at least once, everything within [low, high]."""
    extremes = [row.high, row.low] if rng.random() < 0.5 else [row.low, row.high]
    path = _dedupe_consecutive([row.open, *extremes, row.close])
    # Even a 1-trade candle with open != close needs a trade at each price of its path.
    n = max(row.trades, len(path))
    if n == len(path):
        return path
    decimals = max(_decimals(x) for x in (row.open, row.high, row.low, row.close))
    middle = [
        min(row.high, max(row.low, round(rng.uniform(row.low, row.high), decimals))) for _ in range(n - 2)
    ]
    # Put high and low at random inner positions (n >= 3 here, so there is room for both unless n == 3).
    slots = rng.sample(range(len(middle)), min(2, len(middle)))
    for slot, price in zip(slots, extremes, strict=False):
        middle[slot] = price
    prices = [row.open, *middle, row.close]
    if row.high not in prices or row.low not in prices:  # n == 3 and open/close hit neither extreme
        return path
    return prices


def _dedupe_consecutive(prices: list[float]) -> list[float]:
    out: list[float] = []
    for price in prices:
        if not out or out[-1] != price:
            out.append(price)
    return out


def _decimals(x: float) -> int:
    text = repr(x)
    return len(text.split(".")[1]) if "." in text and "e" not in text else 8


def _exact_split(volume: float, n: int, rng: random.Random) -> list[float]:
    """n positive quantities whose floating-point sum, in any order, is exactly `volume`.

    Every part is an integer multiple of ulp(volume) and every partial sum stays <= volume, so all
    partial sums are exactly representable; the last part is volume minus the others, also exact.
    """
    if n == 1:
        return [volume]
    unit = math.ulp(volume)
    weights = [rng.lognormvariate(0, 1) for _ in range(n)]
    total = sum(weights)
    parts = [max(1, round(volume * w / total / unit)) * unit for w in weights[:-1]]
    last = volume - math.fsum(parts)
    if last <= 0:  # only with absurd weights; an even split always leaves room
        parts = [math.floor(volume / n / unit) * unit] * (n - 1)
        last = volume - math.fsum(parts)
    assert last > 0 and math.fsum([*parts, last]) == volume
    return [*parts, last]


# --- synthetic market ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairSpec:
    """How one synthetic book behaves. Volatility and trade rate are long-run averages."""

    pair: str
    start_price: float = 30_000.0
    tick: float = 0.1
    trades_per_minute: float = 20.0
    volatility_per_minute: float = 0.001
    size_mu: float = -3.0  # lognormal sizes: median exp(mu) base units
    size_sigma: float = 1.2
    size_decimals: int = 8


DEFAULT_SPECS = {
    "BTC/USD": PairSpec("BTC/USD", 30_000.0, 0.1, size_mu=-3.0),
    "ETH/USD": PairSpec("ETH/USD", 2_000.0, 0.01, trades_per_minute=15.0, size_mu=-1.0),
    "SOL/USD": PairSpec(
        "SOL/USD", 100.0, 0.01, trades_per_minute=10.0, volatility_per_minute=0.0015, size_mu=1.0
    ),
    "XBT/EUR": PairSpec("XBT/EUR", 28_000.0, 0.1, trades_per_minute=8.0, size_mu=-3.0),
}

# GARCH(1,1) on 1-minute returns (persistence 0.98: volatility regimes of half an hour or so);
# within a minute the latent mid moves every second with that minute's variance.
GARCH_ALPHA, GARCH_BETA = 0.12, 0.86
# Hawkes-like self-excitation of arrivals: each trade raises the rate; the excess decays in ~5 s.
HAWKES_BRANCHING, HAWKES_DECAY_S = 0.5, 5.0


def spec_for(pair: str, trades_per_minute: float | None = None) -> PairSpec:
    spec = DEFAULT_SPECS.get(pair, PairSpec(pair))
    if trades_per_minute is not None:
        spec = PairSpec(**(spec.__dict__ | {"trades_per_minute": trades_per_minute}))
    return spec


def synthetic_market(
    pairs: Sequence[str | PairSpec], start: datetime, minutes: int, seed: int = 7
) -> list[Trade]:
    """A seeded multi-pair market, merged in time order: volatility clustering (GARCH(1,1) on the
    1-minute returns of a latent mid price), bursts of trades (self-exciting arrivals whose base rate follows volatility),
    lognormal sizes, prices on the tick grid with a one-tick bid/ask bounce."""
    books = [
        _simulate_book(p if isinstance(p, PairSpec) else spec_for(p), start, minutes, seed) for p in pairs
    ]
    return sorted((t for book in books for t in book), key=lambda t: (t.timestamp, t.pair, t.trade_id))


def _simulate_book(spec: PairSpec, start: datetime, minutes: int, seed: int) -> list[Trade]:
    rng = random.Random(f"{seed}:{spec.pair}")  # str seeds are stable across runs and platforms
    h_bar = spec.volatility_per_minute**2  # long-run variance of 1-minute log returns
    h = h_bar
    omega = h_bar * (1 - GARCH_ALPHA - GARCH_BETA)
    decay = math.exp(-1 / HAWKES_DECAY_S)
    jump = HAWKES_BRANCHING * (1 - decay)  # so the kernel integrates to the branching ratio
    base_rate = spec.trades_per_minute / 60 * (1 - HAWKES_BRANCHING)
    log_mid, excitation, minute_return = math.log(spec.start_price), 0.0, 0.0
    trades: list[Trade] = []
    for second in range(minutes * 60):
        if second and second % 60 == 0:
            h = omega + GARCH_ALPHA * minute_return**2 + GARCH_BETA * h
            minute_return = 0.0
        r = math.sqrt(h / 60) * rng.gauss(0, 1)
        # Activity follows volatility (floored so quiet spells still trade).
        rate = base_rate * max(0.6, math.sqrt(h / h_bar)) + excitation
        count = _poisson(rng, rate)
        for offset in sorted(rng.sample(range(1_000_000), count)):  # in time order, so ids follow time
            mid = log_mid + r * offset / 1e6
            trades.append(
                _synthetic_trade(
                    spec, rng, len(trades) + 1, start, second, offset, mid, r / math.sqrt(h / 60)
                )
            )
        log_mid += r
        minute_return += r
        excitation = excitation * decay + jump * count
    return trades


def _synthetic_trade(
    spec: PairSpec,
    rng: random.Random,
    trade_id: int,
    start: datetime,
    second: int,
    offset_us: int,
    log_mid: float,
    shock: float,
) -> Trade:
    # Order flow leans with the move; buyers pay the ask (tick above mid), sellers hit the bid.
    buy = rng.random() < 0.5 + 0.3 * math.tanh(shock)
    mid_ticks = math.exp(log_mid) / spec.tick
    ticks = math.ceil(mid_ticks) if buy else math.floor(mid_ticks)
    decimals = max(0, -math.floor(math.log10(spec.tick) + 1e-9))
    ts = start + timedelta(seconds=second, microseconds=offset_us)
    qty = max(
        10**-spec.size_decimals, round(rng.lognormvariate(spec.size_mu, spec.size_sigma), spec.size_decimals)
    )
    return Trade(
        pair=spec.pair,
        trade_id=trade_id,
        price=round(max(1, ticks) * spec.tick, decimals),
        qty=qty,
        side="buy" if buy else "sell",
        ord_type="market" if rng.random() < 0.7 else "limit",
        timestamp=ts,
        ingested_at=ts,
    )


def _poisson(rng: random.Random, lam: float) -> int:
    if lam > 30:  # normal approximation; exact sampling is slow and unnecessary here
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    threshold, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= threshold:
            return k
        k += 1


def synthetic_trades(
    pair: str,
    start: datetime,
    minutes: int,
    trades_per_minute: float = 20.0,
    start_price: float = 30_000.0,
    volatility_per_minute: float = 0.001,
    seed: int = 7,
) -> Iterator[Trade]:
    """The original single-pair generator, kept bit-for-bit so seeded tests and demos replay the same
    trades: Poisson arrivals on a geometric random walk with a little momentum."""
    rng = random.Random(seed)
    price, drift = start_price, 0.0
    t = start
    end = start + timedelta(minutes=minutes)
    trade_id = 1
    step_s = 60.0 / trades_per_minute
    while True:
        t += timedelta(seconds=rng.expovariate(1.0 / step_s))
        if t >= end:
            return
        drift = 0.9 * drift + 0.1 * rng.gauss(0, volatility_per_minute)
        price *= math.exp(
            drift * math.sqrt(step_s / 60) + rng.gauss(0, volatility_per_minute) * math.sqrt(step_s / 60)
        )
        yield Trade(
            pair=pair,
            trade_id=trade_id,
            price=round(price, 1),
            qty=round(rng.lognormvariate(-3, 1.2), 8),
            side=rng.choice(("buy", "sell")),
            ord_type=rng.choice(("market", "limit")),
            timestamp=t,
            ingested_at=t,
        )
        trade_id += 1


# --- one entry point for the CLI -------------------------------------------------------------------


def load_trades(
    source: str,
    pairs: Sequence[str],
    *,
    file: Path | None = None,
    start: datetime,
    minutes: int = 600,
    trades_per_minute: float | None = None,
    seed: int = 7,
    ohlcvt_start: datetime | None = None,
    ohlcvt_end: datetime | None = None,
) -> list[Trade]:
    """Trades of one source: `synthetic` (market over `pairs` from `start`), `trades-file` (CSV or
    Parquet; `pairs[0]` names a file without a pair column) or `ohlcvt` (candles of `pairs[0]`)."""
    if source == "synthetic":
        return synthetic_market([spec_for(p, trades_per_minute) for p in pairs], start, minutes, seed)
    if file is None:
        raise ValueError(f"source {source} needs a file")
    if source == "trades-file":
        return trades_file(file, pairs[0])
    if source == "ohlcvt":
        return list(ohlcvt_trades(file, pairs[0], start=ohlcvt_start, end=ohlcvt_end, seed=seed))
    raise ValueError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
