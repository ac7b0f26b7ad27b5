"""Our stored candles against the venue's own OHLC endpoint (cryptopredict.venue_check), on the real feature
store and the replay exchange's Kraken `OHLC` (built from the trades it served): candles built from the
same trades agree to rounding; a stored candle altered by 2% is the one window that disagrees, and is
counted once; the periodic check compares each closed window once and counts a venue it cannot reach."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from topic_prefixes import session_pair
from websockets.asyncio.client import connect

from cryptopredict.features.candles import CandleState
from cryptopredict.kraken.protocol import subscribe_request
from cryptopredict.kraken.rest import KrakenRestClient
from cryptopredict.kraken.sources import synthetic_market
from cryptopredict.models import Candle
from cryptopredict.settings import Settings
from cryptopredict.simulators.exchange import ReplayExchange
from cryptopredict.store.candles import async_engine, sync_engine, upsert_candles
from cryptopredict.topics import split_namespace
from cryptopredict.venue_check import check_pair, watch_venue_candles

pytestmark = pytest.mark.integration

START = datetime(2026, 4, 2, 9, 0, tzinfo=UTC)
MINUTES = 20


def candles_of(pair: str, trades) -> list[Candle]:
    """The 1m candles the candle agent closes from these trades (all but the still open last window)."""
    state = CandleState(pair=pair, interval_s=60, grace_s=5.0)
    named = [t.model_copy(update={"pair": pair}) for t in trades]
    return [c for t in named for c in state.add_trade(t)[0]]


async def served(exchange: ReplayExchange, pair: str) -> None:
    """Reads the replay to its end, so every trade has happened and REST serves all of it."""
    async with connect(exchange.url) as ws:
        await ws.send(subscribe_request([pair]))
        async with asyncio.timeout(60):
            while not exchange.finished.is_set():
                try:
                    await asyncio.wait_for(ws.recv(), 1)
                except TimeoutError:
                    pass


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_candles_agree_with_the_venue_and_an_altered_one_is_counted(settings: Settings) -> None:
    pair = session_pair("VC")
    _, venue_pair = split_namespace(pair)
    trades = synthetic_market([venue_pair], START, MINUTES, seed=21)
    candles = candles_of(pair, trades)
    assert len(candles) >= MINUTES - 2 and candles[0].window_start == START
    writer = async_engine(settings.postgres)
    reader = sync_engine(settings.postgres)
    exchange = ReplayExchange(trades, speed=None)
    await exchange.start()
    rest = KrakenRestClient(exchange.rest_url, min_interval_s=0, max_retries=0)
    start, end = candles[0].window_start, candles[-1].window_end
    try:
        await upsert_candles(writer, candles)
        await served(exchange, venue_pair)

        agreeing = await check_pair(reader, rest, "kraken", pair, start, end, tolerance=0.001)
        assert len(agreeing.windows) == len(candles) and agreeing.unmatched_venue_rows == 0
        assert agreeing.max_deviation < 1e-6 and not agreeing.disagreeing
        gauge = "cryptopredict_venue_ohlc_deviation_ratio"
        assert sample(gauge, exchange="kraken", pair=pair) == agreeing.max_deviation

        altered = candles[5].model_copy(update={"high": candles[5].high * 1.02})
        await upsert_candles(writer, [altered])
        counted = "cryptopredict_venue_ohlc_disagreeing_windows_total"
        before = sample(counted, exchange="kraken", pair=pair)
        disagreeing = await check_pair(reader, rest, "kraken", pair, start, end, tolerance=0.001)
        (window,) = disagreeing.disagreeing
        assert (window.window_start, window.field) == (altered.window_start, "high")
        assert window.deviation == pytest.approx(0.02 / 1.02, rel=1e-6)
        assert sample(gauge, exchange="kraken", pair=pair) == pytest.approx(0.02 / 1.02, rel=1e-6)
        assert sample(counted, exchange="kraken", pair=pair) - before == 1

        # The periodic check: started at minute 2 (so from minute 3), rounds at minutes 10 and 25 compare
        # [3, 10) and [10, last window) once each; the altered minute 5 window counts once more.
        venue_settings = settings.kraken.model_copy(
            update={"pairs": [venue_pair], "ohlc_check_every_s": 0.01, "ohlc_check_delay_s": 0}
        )
        watching = settings.model_copy(update={"kraken": venue_settings}).in_namespace("test")
        moments = iter([START + timedelta(minutes=m) for m in (2, 10)] + [end])
        windows = "cryptopredict_venue_ohlc_windows_total"
        compared = sample(windows, exchange="kraken", pair=pair)
        counted_before = sample(counted, exchange="kraken", pair=pair)
        await watch_venue_candles(watching, "kraken", rest, clock=lambda: next(moments), rounds=2)
        last_window = int((end - START).total_seconds() // 60)
        assert sample(windows, exchange="kraken", pair=pair) - compared == last_window - 3
        assert sample(counted, exchange="kraken", pair=pair) - counted_before == 1

        # A venue that does not answer: the round is counted as failed and nothing is compared.
        await exchange.stop()
        failed = sample("cryptopredict_venue_ohlc_checks_total", exchange="kraken", outcome="failed")
        moments = iter([START, START + timedelta(minutes=10)])
        await watch_venue_candles(watching, "kraken", rest, clock=lambda: next(moments), rounds=1)
        assert (
            sample("cryptopredict_venue_ohlc_checks_total", exchange="kraken", outcome="failed") == failed + 1
        )
        assert sample(windows, exchange="kraken", pair=pair) - compared == last_window - 3
    finally:
        await exchange.stop()
        await rest.aclose()
        await writer.dispose()
        reader.dispose()
