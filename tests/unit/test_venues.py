"""Markets (a pair on one venue) and the one map between venue symbols and the project's pair names:
Kraken's keys stay the bare pair, every other venue's carry its name, and nothing decodes ambiguously."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cryptopredict.models import Candle, Trade, TradeBatch
from cryptopredict.settings import Settings
from cryptopredict.topics import market_key, split_market
from cryptopredict.venues import UnknownSymbol, base_asset, project_pair, venue_symbol

pytestmark = pytest.mark.unit

T = datetime(2026, 5, 1, tzinfo=UTC)


def trade(exchange: str, pair: str, trade_id: int = 1) -> Trade:
    return Trade(
        exchange=exchange,
        pair=pair,
        trade_id=trade_id,
        price=1.0,
        qty=1.0,
        side="buy",
        timestamp=T,
        ingested_at=T,
    )


@pytest.mark.parametrize(
    ("exchange", "pair", "key"),
    [
        ("kraken", "BTC/USD", "BTC/USD"),
        ("kraken", "demo.BTC/USD", "demo.BTC/USD"),
        ("coinbase", "BTC/USD", "coinbase:BTC/USD"),
        ("binance", "test.X1A2/USDT", "binance:test.X1A2/USDT"),
    ],
)
def test_market_keys_round_trip_and_kraken_keeps_the_bare_pair(exchange: str, pair: str, key: str) -> None:
    assert market_key(exchange, pair) == key
    assert split_market(key) == (exchange, pair)


def test_an_unknown_exchange_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown exchange 'ftx'"):
        market_key("ftx", "BTC/USD")
    with pytest.raises(ValueError, match="unknown exchange 'ftx'"):
        split_market("ftx:BTC/USD")


def test_records_written_before_venues_existed_read_as_kraken() -> None:
    old = '{"pair":"BTC/USD","trade_id":5,"price":1,"qty":1,"side":"buy","timestamp":"2026-05-01T00:00:00Z","ingested_at":"2026-05-01T00:00:00Z"}'
    assert Trade.model_validate_json(old).exchange == "kraken"
    assert Trade.model_validate_json(old).market == "BTC/USD"


def test_a_batch_holds_one_market_and_batches_split_by_venue() -> None:
    from cryptopredict.models import trade_batches

    batches = trade_batches(
        [trade("kraken", "BTC/USD", 1), trade("coinbase", "BTC/USD", 1), trade("kraken", "BTC/USD", 2)]
    )
    assert [(b.market, [t.trade_id for t in b.trades]) for b in batches] == [
        ("BTC/USD", [1, 2]),
        ("coinbase:BTC/USD", [1]),
    ]
    with pytest.raises(ValueError, match="holds trades of"):
        TradeBatch(exchange="kraken", pair="BTC/USD", trades=[trade("coinbase", "BTC/USD")])


def test_candles_carry_their_venue() -> None:
    candle = Candle(
        exchange="binance",
        pair="BTC/USDT",
        interval_s=60,
        window_start=T,
        window_end=T.replace(minute=1),
        open=1,
        high=1,
        low=1,
        close=1,
        volume=1,
        vwap=1,
        trade_count=1,
    )
    assert candle.market == "binance:BTC/USDT"
    with pytest.raises(ValueError):
        Candle.model_validate(candle.model_dump() | {"exchange": "ftx"})


@pytest.mark.parametrize(
    ("exchange", "symbol", "pair"),
    [
        ("kraken", "BTC/USD", "BTC/USD"),
        ("coinbase", "BTC-USD", "BTC/USD"),
        ("coinbase", "ETH-USDC", "ETH/USDC"),
        ("binance", "BTCUSDT", "BTC/USDT"),
        ("binance", "btcfdusd", "BTC/FDUSD"),
        ("binance", "ETHBTC", "ETH/BTC"),
    ],
)
def test_venue_symbols_map_to_project_pairs_and_back(exchange: str, symbol: str, pair: str) -> None:
    assert project_pair(exchange, symbol) == pair
    assert venue_symbol(exchange, pair) == (symbol.upper() if exchange == "binance" else symbol)
    assert venue_symbol(exchange, f"demo.{pair}") == venue_symbol(exchange, pair)


@pytest.mark.parametrize(
    ("exchange", "symbol"),
    [("coinbase", "BTCUSD"), ("binance", "USDT"), ("binance", "BTCXYZ1"), ("coinbase", "BTC-")],
)
def test_symbols_naming_no_pair_are_refused(exchange: str, symbol: str) -> None:
    with pytest.raises(UnknownSymbol):
        project_pair(exchange, symbol)


def test_base_asset_ignores_venue_and_namespace() -> None:
    assert base_asset("coinbase:demo.BTC/USD") == base_asset("BTC/USDT") == "BTC"


def test_kraken_only_settings_are_unchanged_and_venues_add_market_keys() -> None:
    assert Settings().pairs == ["BTC/USD"]
    both = Settings(venues=["kraken", "coinbase"], coinbase={"pairs": ["BTC/USD", "ETH/USD"]})
    assert both.pairs == ["BTC/USD", "coinbase:BTC/USD", "coinbase:ETH/USD"]
    assert both.in_namespace("demo").pairs == [
        "demo.BTC/USD",
        "coinbase:demo.BTC/USD",
        "coinbase:demo.ETH/USD",
    ]
    with pytest.raises(ValueError):
        Settings(venues=["ftx"])
