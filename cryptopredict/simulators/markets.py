"""Seeded synthetic candle histories for tests and benchmarks: a random walk (nothing to learn, so the
gate must keep persistence) or returns with AR(1) structure (something a model can learn)."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from cryptopredict.features.candles import gap_candle
from cryptopredict.models import Candle


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
        out.append(
            Candle.model_construct(
                pair=pair,
                interval_s=interval_s,
                window_start=window_start,
                window_end=window_start + step,
                open=price,
                high=max(price, close) * (1 + spread[i]),
                low=min(price, close) * (1 - spread[i]),
                close=close,
                volume=float(volume[i]),
                vwap=(price + close) / 2,
                trade_count=1 + int(volume[i] * 10),
                first_trade_id=None,
                last_trade_id=None,
                gap=False,
            )
        )
        price, previous_return = close, log_return
    return out
