"""Seeded synthetic candle histories for tests and benchmarks: a random walk (nothing to learn, so the
gate must keep persistence), returns with AR(1) structure (something a model can learn), or one coin on
two venues, one leading the other by a known lag or neither leading (cross-venue features)."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from cryptopredict.features.candles import gap_candle
from cryptopredict.models import Candle
from cryptopredict.topics import split_market


def synthetic_candles(
    pair: str,
    interval_s: int,
    n: int,
    start: datetime,
    seed: int = 0,
    ar: float = 0.0,
    volatility: float = 0.002,
    gap_every: int = 0,
) -> list[Candle]:
    """`n` consecutive candles; log returns r_t = ar * r_{t-1} + noise. Every `gap_every`-th window
    (0: none) has no trades and becomes a gap candle."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, volatility, n)
    spread = rng.uniform(0.0, volatility, n)
    volume = rng.lognormal(0.0, 0.5, n)
    step = timedelta(seconds=interval_s)
    price, previous_return, out = 30_000.0, 0.0, []
    for i in range(n):
        window_start = start + step * i
        if gap_every and i % gap_every == gap_every - 1:
            out.append(gap_candle(pair, interval_s, window_start, price))
            continue
        log_return = ar * previous_return + noise[i]
        close = price * float(np.exp(log_return))
        out.append(_candle(pair, interval_s, window_start, price, close, spread[i], volume[i]))
        price, previous_return = close, log_return
    return out


def _candle(
    market: str,
    interval_s: int,
    window_start: datetime,
    price: float,
    close: float,
    spread: float,
    volume: float,
) -> Candle:
    """A candle opening at `price` and closing at `close`, its range widened by `spread` (a fraction)."""
    exchange, pair = split_market(market)
    return Candle.model_construct(
        exchange=exchange,
        pair=pair,
        interval_s=interval_s,
        window_start=window_start,
        window_end=window_start + timedelta(seconds=interval_s),
        open=float(price),
        high=float(max(price, close) * (1 + spread)),
        low=float(min(price, close) * (1 - spread)),
        close=float(close),
        volume=float(volume),
        vwap=float(price + close) / 2,
        trade_count=1 + int(volume * 10),
        first_trade_id=None,
        last_trade_id=None,
        gap=False,
    )


def two_venue_candles(
    leader: str,
    follower: str,
    interval_s: int,
    n: int,
    start: datetime,
    lead: int | None,
    seed: int = 0,
    volatility: float = 0.002,
    noise: float = 2.0,
) -> tuple[list[Candle], list[Candle]]:
    """`n` candles of one coin on two venues (market keys `leader`, `follower`).

    `lead` L: the leader's log returns are white noise and the follower's return at t is the leader's at
    t - L plus its own noise, `noise` times as wide: the leader's past explains 1 / (1 + noise**2) of the
    follower's variance. None: neither leads; each venue's return is a common random walk's plus noise of
    its own, so nothing about either venue's next return is known from any past."""
    rng = np.random.default_rng(seed)
    common = rng.normal(0.0, volatility, n)
    if lead is None:
        theirs = common + rng.normal(0.0, noise * volatility, n)
        ours = common + rng.normal(0.0, noise * volatility, n)
    else:
        theirs = common
        ours = np.concatenate([np.zeros(lead), common[: n - lead]]) + rng.normal(0.0, noise * volatility, n)
    step = timedelta(seconds=interval_s)
    venues = []
    for market, returns in ((leader, theirs), (follower, ours)):
        spread, volume = rng.uniform(0.0, volatility, n), rng.lognormal(0.0, 0.5, n)
        closes = 30_000.0 * np.exp(np.cumsum(returns))
        opens = np.concatenate([[30_000.0], closes[:-1]])
        venues.append(
            [
                _candle(market, interval_s, start + step * i, opens[i], closes[i], spread[i], volume[i])
                for i in range(n)
            ]
        )
    return venues[0], venues[1]
