"""Technical indicators of closed candles, updated in O(1) per candle; candles in, `IndicatorRow`s out.

The values equal the `ta` library's (0.11, `fillna=False`) computed over the same full history of
candles, gap candles included. To get there the kernels replay the arithmetic that `ta` delegates to
pandas, operation for operation: `rolling().mean()` and `rolling().std(ddof=0)` are pandas' Kahan and
Welford running sums (with separate add/remove compensations, the same-value shortcut and the
recompute of a numerically unstable window), `ewm(adjust=False).mean()` is pandas' recursion with its
`alpha = 1 / (1 + com)`. Copying the update order instead of computing the definitions keeps us within
the last bits of `ta` over ~80k candles, where a textbook running sum would drift away from it.

Deliberate difference: `ta`'s ATR is 0.0 (not NaN) before its first full window; ours is None there.

`IndicatorState` is JSON data (a pydantic model of plain dataclasses) for a Faust table with a JSON
codec; its size depends on the configured windows, never on the length of the history.
`indicator_frame` runs the same `IndicatorState` over a history for training, so there is no skew.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from cryptopredict.models import Candle, IndicatorRow

if TYPE_CHECKING:
    import pandas as pd

MACD = "macd"
MACD_SIGNAL = "macd_signal"
MACD_HIST = "macd_hist"
BB_MID = "bb_mid"
BB_UPPER = "bb_upper"
BB_LOWER = "bb_lower"
BB_WIDTH = "bb_width"  # (upper - lower) / mid * 100, a percentage as in ta's bollinger_wband
OBV = "obv"
WARM_UP = "warm_up"

# pandas' threshold for a possibly catastrophic cancellation in its rolling variance.
_INV_COND_TOL = sys.float_info.epsilon * 1e3


def sma_name(window: int) -> str:
    return f"sma_{window}"


def ema_name(window: int) -> str:
    return f"ema_{window}"


def rsi_name(window: int) -> str:
    return f"rsi_{window}"


def atr_name(window: int) -> str:
    return f"atr_{window}"


class IndicatorConfig(BaseModel):
    """Windows of every indicator; the defaults are the issue's, and ta's for RSI, MACD, Bollinger, ATR."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sma_windows: tuple[int, ...] = (7, 14, 21, 60)
    ema_windows: tuple[int, ...] = (7, 14, 21, 60)
    rsi_window: int = Field(default=14, ge=2)
    macd_fast: int = Field(default=12, ge=2)
    macd_slow: int = Field(default=26, ge=2)
    macd_signal: int = Field(default=9, ge=2)
    bb_window: int = Field(default=20, ge=2)
    bb_std: float = Field(default=2.0, gt=0)
    atr_window: int = Field(default=14, ge=2)

    @model_validator(mode="after")
    def _windows(self) -> IndicatorConfig:
        for windows in (self.sma_windows, self.ema_windows):
            if len(set(windows)) != len(windows) or any(w < 2 for w in windows):
                raise ValueError("SMA and EMA windows must be distinct and at least 2")
        return self

    def feature_names(self) -> list[str]:
        """Column order of `indicator_frame` and key order of `IndicatorRow.values`."""
        return [
            *(sma_name(w) for w in self.sma_windows),
            *(ema_name(w) for w in self.ema_windows),
            rsi_name(self.rsi_window),
            MACD,
            MACD_SIGNAL,
            MACD_HIST,
            BB_MID,
            BB_UPPER,
            BB_LOWER,
            BB_WIDTH,
            atr_name(self.atr_window),
            OBV,
        ]

    @property
    def history(self) -> int:
        """Closes kept: the longest rolling window and the close that leaves it next."""
        return max((*self.sma_windows, self.bb_window)) + 1


# ---------------------------------------------------------------------------------------------------
# Kernels: one pandas algorithm each, as plain dataclasses (fast attribute updates, JSON via pydantic).


@dataclass(slots=True)
class Ewm:
    """pandas `ewm(com=com, adjust=False, min_periods=min_periods).mean()`, one observation at a time."""

    alpha: float
    min_periods: int
    value: float | None = None
    nobs: int = 0

    @classmethod
    def from_span(cls, span: int, min_periods: int) -> Ewm:
        return cls(alpha=1.0 / (1.0 + (span - 1) / 2), min_periods=min_periods)

    @classmethod
    def from_alpha(cls, alpha: float, min_periods: int) -> Ewm:
        return cls(alpha=1.0 / (1.0 + (1 - alpha) / alpha), min_periods=min_periods)

    def update(self, x: float) -> float | None:
        weighted = self.value
        if weighted is None:
            weighted = x
        elif weighted != x:  # pandas skips the update on equal values to keep constant series exact
            old = 1.0 - self.alpha
            weighted = (old * weighted + self.alpha * x) / (old + self.alpha)
        self.value = weighted
        if self.nobs < self.min_periods:
            self.nobs += 1
            if self.nobs < self.min_periods:
                return None
        return weighted


@dataclass(slots=True)
class RollingMean:
    """pandas `rolling(window).mean()`: Kahan sum with separate add and remove compensations.

    Inputs are positive prices, so pandas' clamp of a wrong-signed mean to 0 never applies.
    """

    window: int
    total: float = 0.0
    comp_add: float = 0.0
    comp_remove: float = 0.0
    nobs: int = 0
    same_run: int = 0  # trailing run of equal inputs; a window inside one is its last value, exactly
    last: float | None = None

    def update(self, x: float, leaving: float | None) -> float | None:
        if leaving is not None:
            y = -leaving - self.comp_remove
            t = self.total + y
            self.comp_remove = t - self.total - y
            self.total = t
        else:
            self.nobs += 1
        y = x - self.comp_add
        t = self.total + y
        self.comp_add = t - self.total - y
        self.total = t
        self.same_run = self.same_run + 1 if x == self.last else 1
        self.last = x
        if self.nobs < self.window:
            return None
        if self.same_run >= self.window:
            return x
        return t / self.window


@dataclass(slots=True)
class RollingStd:
    """pandas `rolling(window).std(ddof=0)`: Welford with Kahan compensation; a window whose sum of
    squares looks cancelled is recomputed from its values, and a negative variance is 0 (zsqrt)."""

    window: int
    mean: float = 0.0
    ssqdm: float = 0.0
    comp_add: float = 0.0
    comp_remove: float = 0.0
    nobs: int = 0

    def _add(self, x: float) -> bool:
        prev_m2 = self.ssqdm
        self.nobs += 1
        prev_mean = self.mean - self.comp_add
        y = x - self.comp_add
        t = y - self.mean
        self.comp_add = t + self.mean - y
        self.mean = self.mean + t / self.nobs
        self.ssqdm = self.ssqdm + (x - prev_mean) * (x - self.mean)
        return prev_m2 * _INV_COND_TOL > self.ssqdm

    def update(self, x: float, leaving: float | None, history: list[float]) -> float | None:
        """`history` ends with `x` and holds at least the window."""
        unstable = False
        if leaving is not None:
            prev_m2 = self.ssqdm
            self.nobs -= 1
            prev_mean = self.mean - self.comp_remove
            y = leaving - self.comp_remove
            t = y - self.mean
            self.comp_remove = t + self.mean - y
            self.mean = self.mean - t / self.nobs
            self.ssqdm = self.ssqdm - (leaving - prev_mean) * (leaving - self.mean)
            unstable = prev_m2 * _INV_COND_TOL > self.ssqdm
        unstable = self._add(x) or unstable
        if unstable:
            self.mean = self.ssqdm = self.comp_add = self.comp_remove = 0.0
            self.nobs = 0
            for value in history[-self.window :]:
                self._add(value)
        if self.nobs < self.window:
            return None
        variance = self.ssqdm / self.nobs
        return math.sqrt(variance) if variance >= 0 else 0.0


def numpy_sum(values: Sequence[float]) -> float:
    """The float64 sum in numpy's order (pairwise, blocks of 8), as pandas' `Series.mean` adds."""
    return _pairwise(values, 0, len(values))


def _pairwise(a: Sequence[float], lo: int, hi: int) -> float:
    n = hi - lo
    if n < 8:
        total = -0.0
        for i in range(lo, hi):
            total += a[i]
        return total
    if n <= 128:
        r = list(a[lo : lo + 8])
        i = lo + 8
        while i < hi - n % 8:
            for k in range(8):
                r[k] += a[i + k]
            i += 8
        total = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        for j in range(i, hi):
            total += a[j]
        return total
    half = n // 2
    half -= half % 8
    return _pairwise(a, lo, lo + half) + _pairwise(a, lo + half, hi)


@dataclass(slots=True)
class Atr:
    """ta's AverageTrueRange: the mean true range of the first `window` candles (the first candle's is
    high - low), then Wilder's recursion `(atr * (window - 1) + tr) / window`."""

    window: int
    value: float | None = None
    seed: list[float] = field(default_factory=list)  # true ranges until the first window is full

    def update(self, high: float, low: float, prev_close: float | None) -> float | None:
        tr = high - low
        if prev_close is not None:
            tr = max(tr, abs(high - prev_close), abs(low - prev_close))
        if self.value is not None:
            self.value = (self.value * (self.window - 1) + tr) / float(self.window)
        else:
            self.seed.append(tr)
            if len(self.seed) < self.window:
                return None
            self.value = numpy_sum(self.seed) / self.window
            self.seed.clear()
        return self.value


@dataclass(slots=True)
class Prices:
    """The last closes (for the rolling windows and the diffs) and the running OBV."""

    closes: list[float] = field(default_factory=list)
    obv: float = 0.0
    last_start: float | None = None  # epoch seconds of the last candle, to refuse replays


class IndicatorState(BaseModel):
    """Indicator state of one (pair, interval); `update` takes each closed candle once, in order."""

    model_config = ConfigDict(extra="forbid")

    # The market key (topics.market_key), as the candle builder's state holds it.
    pair: str
    interval_s: int
    config: IndicatorConfig
    prices: Prices
    sma: list[RollingMean]
    ema: list[Ewm]
    rsi_up: Ewm
    rsi_down: Ewm
    macd_fast: Ewm
    macd_slow: Ewm
    macd_signal: Ewm
    bb_mean: RollingMean
    bb_std: RollingStd
    atr: Atr
    _names: list[str] = PrivateAttr(default_factory=list)

    def model_post_init(self, context: object, /) -> None:
        self._names = self.config.feature_names()

    @classmethod
    def new(cls, pair: str, interval_s: int, config: IndicatorConfig | None = None) -> IndicatorState:
        config = config or IndicatorConfig()
        return cls(
            pair=pair,
            interval_s=interval_s,
            config=config,
            prices=Prices(),
            sma=[RollingMean(w) for w in config.sma_windows],
            ema=[Ewm.from_span(w, w) for w in config.ema_windows],
            rsi_up=Ewm.from_alpha(1 / config.rsi_window, config.rsi_window),
            rsi_down=Ewm.from_alpha(1 / config.rsi_window, config.rsi_window),
            macd_fast=Ewm.from_span(config.macd_fast, config.macd_fast),
            macd_slow=Ewm.from_span(config.macd_slow, config.macd_slow),
            macd_signal=Ewm.from_span(config.macd_signal, config.macd_signal),
            bb_mean=RollingMean(config.bb_window),
            bb_std=RollingStd(config.bb_window),
            atr=Atr(config.atr_window),
        )

    def update(self, candle: Candle) -> IndicatorRow:
        """Indicators at this closed candle; `warm_up` when any of them has no value yet."""
        values = dict(zip(self._names, self._step(candle), strict=True))
        return IndicatorRow.model_construct(  # every field comes from a validated candle
            exchange=candle.exchange,
            pair=candle.pair,
            interval_s=candle.interval_s,
            window_start=candle.window_start,
            values=values,
            warm_up=None in values.values(),
        )

    def _step(self, candle: Candle) -> list[float | None]:
        if candle.market != self.pair or candle.interval_s != self.interval_s:
            raise ValueError(
                f"candle of {candle.market}/{candle.interval_s}s fed to {self.pair}/{self.interval_s}s"
            )
        prices = self.prices
        start = candle.window_start.timestamp()
        if prices.last_start is not None and start <= prices.last_start:
            raise ValueError(f"candle at {candle.window_start} is not after the last one")
        prices.last_start = start
        close = candle.close
        closes = prices.closes
        prev_close = closes[-1] if closes else None
        count = len(closes)
        closes.append(close)
        if count == self.config.history:
            del closes[0]
        size = len(closes)

        out: list[float | None] = []
        for sma in self.sma:
            out.append(sma.update(close, closes[-sma.window - 1] if size > sma.window else None))
        for ema in self.ema:
            out.append(ema.update(close))

        # ta: diff.where(diff > 0, 0.0) and -diff.where(diff < 0, 0.0); the first diff is NaN, so both
        # series start with a zero observation and the first RSI comes after window - 1 real diffs.
        diff = close - prev_close if prev_close is not None else 0.0
        up = self.rsi_up.update(diff if diff > 0 else 0.0)
        down = self.rsi_down.update(-(diff if diff < 0 else 0.0))
        if up is None or down is None:
            out.append(None)
        elif down == 0:
            out.append(100.0)
        else:
            out.append(100 - 100 / (1 + up / down))

        fast = self.macd_fast.update(close)
        slow = self.macd_slow.update(close)
        if fast is None or slow is None:
            out += (None, None, None)
        else:
            macd = fast - slow
            signal = self.macd_signal.update(macd)  # its min_periods count from the first MACD value
            out += (macd, signal, None if signal is None else macd - signal)

        leaving = closes[-self.bb_mean.window - 1] if size > self.bb_mean.window else None
        mid = self.bb_mean.update(close, leaving)
        std = self.bb_std.update(close, leaving, closes)
        if mid is None or std is None:
            out += (None, None, None, None)
        else:
            upper = mid + self.config.bb_std * std
            lower = mid - self.config.bb_std * std
            out += (mid, upper, lower, (upper - lower) / mid * 100)

        out.append(self.atr.update(candle.high, candle.low, prev_close))
        # ta: np.where(close < close.shift(1), -volume, volume).cumsum()
        prices.obv += -candle.volume if prev_close is not None and close < prev_close else candle.volume
        out.append(prices.obv)
        return out


def indicator_frame(candles: Sequence[Candle], config: IndicatorConfig | None = None) -> pd.DataFrame:
    """Indicators of a history of one (pair, interval), by the same `IndicatorState` the stream uses.

    Indexed by window_start; NaN where a value is None; a boolean `warm_up` column.
    """
    import pandas as pd

    config = config or IndicatorConfig()
    names = config.feature_names()
    if not candles:
        return pd.DataFrame(columns=[*names, WARM_UP])
    state = IndicatorState.new(candles[0].market, candles[0].interval_s, config)
    rows = [state._step(candle) for candle in candles]
    frame = pd.DataFrame(rows, columns=names, dtype=float)
    frame.index = pd.DatetimeIndex([c.window_start for c in candles], name="window_start")
    frame[WARM_UP] = frame[names].isna().any(axis=1)
    return frame


def ta_frame(candles: Sequence[Candle], config: IndicatorConfig | None = None) -> pd.DataFrame:
    """The same columns computed by the `ta` library over the whole history: the reference for tests
    and benchmarks, too slow for the stream (it recomputes everything)."""
    import pandas as pd
    from ta.momentum import RSIIndicator
    from ta.trend import MACD as TaMACD
    from ta.trend import EMAIndicator, SMAIndicator
    from ta.volatility import AverageTrueRange, BollingerBands
    from ta.volume import OnBalanceVolumeIndicator

    config = config or IndicatorConfig()
    close = pd.Series([c.close for c in candles], dtype=float)
    high = pd.Series([c.high for c in candles], dtype=float)
    low = pd.Series([c.low for c in candles], dtype=float)
    volume = pd.Series([c.volume for c in candles], dtype=float)
    columns: dict[str, pd.Series] = {}
    for w in config.sma_windows:
        columns[sma_name(w)] = SMAIndicator(close, w, fillna=False).sma_indicator()
    for w in config.ema_windows:
        columns[ema_name(w)] = EMAIndicator(close, w, fillna=False).ema_indicator()
    columns[rsi_name(config.rsi_window)] = RSIIndicator(close, config.rsi_window, fillna=False).rsi()
    macd = TaMACD(close, config.macd_slow, config.macd_fast, config.macd_signal, fillna=False)
    columns[MACD], columns[MACD_SIGNAL], columns[MACD_HIST] = (
        macd.macd(),
        macd.macd_signal(),
        macd.macd_diff(),
    )
    bb = BollingerBands(close, config.bb_window, config.bb_std, fillna=False)
    columns[BB_MID], columns[BB_UPPER], columns[BB_LOWER], columns[BB_WIDTH] = (
        bb.bollinger_mavg(),
        bb.bollinger_hband(),
        bb.bollinger_lband(),
        bb.bollinger_wband(),
    )
    if len(candles) >= config.atr_window:  # ta raises IndexError on a shorter history
        atr = AverageTrueRange(high, low, close, config.atr_window, fillna=False).average_true_range()
    else:
        atr = pd.Series([0.0] * len(candles))
    columns[atr_name(config.atr_window)] = atr
    columns[OBV] = OnBalanceVolumeIndicator(close, volume, fillna=False).on_balance_volume()
    frame = pd.DataFrame({name: series.to_numpy() for name, series in columns.items()})
    frame.index = pd.DatetimeIndex([c.window_start for c in candles], name="window_start")
    return frame
