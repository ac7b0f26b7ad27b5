"""The naming scheme of per-target registered models, retrain workflows and schedules: today's Kraken
price names never change; volatility, another exchange and a demo/test namespace extend them into names
that cannot collide."""

from __future__ import annotations

import itertools

import pytest

from cryptopredict.settings import Settings
from cryptopredict.store.namespace import namespace_tables
from cryptopredict.topics import (
    drift_schedule_id,
    drift_workflow_id,
    in_namespace,
    namespaced_pair,
    news_schedule_id,
    registered_model_name,
    split_namespace,
    training_schedule_id,
    training_workflow_id,
)

pytestmark = pytest.mark.unit


def test_todays_kraken_price_names_are_unchanged() -> None:
    assert registered_model_name("BTC/USD", 60, 1) == "cryptopredict-btcusd-60s-h1"
    assert registered_model_name("ETH/USD", 3600, 24) == "cryptopredict-ethusd-3600s-h24"
    assert registered_model_name("BTC/USD", 60, 1, exchange="kraken", target="price") == (
        "cryptopredict-btcusd-60s-h1"
    )
    assert training_workflow_id("BTC/USD", 60, 1) == "training-BTCUSD-60s-h1"
    assert training_schedule_id("BTC/USD", 60, 1) == "schedule-training-BTCUSD-60s-h1"


def test_volatility_exchange_and_namespace_extend_the_name() -> None:
    assert registered_model_name("BTC/USD", 60, 1, target="volatility") == "cryptopredict-btcusd-60s-h1-vol"
    assert (
        registered_model_name("BTC/USD", 60, 1, exchange="binance") == "cryptopredict-binance-btcusd-60s-h1"
    )
    assert registered_model_name("BTC/USD", 60, 1, namespace="demo") == "cryptopredict.demo-btcusd-60s-h1"
    assert (
        registered_model_name("BTC/USD", 60, 1, target="volatility", exchange="binance", namespace="test")
        == "cryptopredict.test-binance-btcusd-60s-h1-vol"
    )
    assert training_workflow_id("BTC/USD", 60, 1, target="volatility") == "training-BTCUSD-60s-h1-vol"
    assert (
        training_schedule_id("BTC/USD", 60, 1, target="volatility") == "schedule-training-BTCUSD-60s-h1-vol"
    )


def test_every_combination_has_its_own_name() -> None:
    """Including an exchange spelled like a pair and a pair spelled like an exchange."""
    combinations = list(
        itertools.product(
            ["BTC/USD", "BINANCE/USD", "ETH/BTC"],
            [60, 300],
            [1, 6],
            ["price", "volatility"],
            ["kraken", "binance", "btcusd"],
            [None, "demo", "test"],
        )
    )
    for name in (registered_model_name, training_workflow_id, training_schedule_id):
        ids = {
            name(pair, interval, horizon, target=target, exchange=exchange, namespace=namespace)
            for pair, interval, horizon, target, exchange, namespace in combinations
        }
        assert len(ids) == len(combinations)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"exchange": "Bin-ance"},
        {"exchange": ""},
        {"namespace": "demo.x"},
        {"namespace": "de-mo"},
        {"target": "spread"},
    ],
)
def test_segments_that_could_make_names_ambiguous_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        registered_model_name("BTC/USD", 60, 1, **kwargs)
    with pytest.raises(ValueError):
        registered_model_name("BTC-X/USD", 60, 1)


def test_a_namespaced_pair_names_its_targets_in_that_namespace() -> None:
    pair = namespaced_pair("BTC/USD", "demo")
    assert pair == "demo.BTC/USD" and split_namespace(pair) == ("demo", "BTC/USD")
    assert split_namespace("BTC/USD") == (None, "BTC/USD")
    assert registered_model_name(pair, 60, 1) == registered_model_name("BTC/USD", 60, 1, namespace="demo")
    assert registered_model_name(pair, 60, 1) == "cryptopredict.demo-btcusd-60s-h1"
    assert training_workflow_id(pair, 60, 1) == "training.demo-BTCUSD-60s-h1"
    assert drift_workflow_id(pair, 60, 1) == "drift.demo-BTCUSD-60s-h1"
    assert drift_workflow_id("BTC/USD", 60, 1) == "drift-BTCUSD-60s-h1"  # unchanged for live targets
    ids = [
        registered_model_name(pair, 60, 1, target="volatility"),
        training_schedule_id(pair, 300, 2),
        drift_schedule_id(pair, 60, 1),
        news_schedule_id("demo"),
    ]
    assert all(in_namespace(i, "demo") for i in ids)
    live = [
        registered_model_name("BTC/USD", 60, 1),
        training_schedule_id("BTC/USD", 60, 1),
        news_schedule_id(None),
    ]
    assert not any(in_namespace(i, "demo") for i in live)
    with pytest.raises(ValueError, match="namespace"):
        registered_model_name(pair, 60, 1, namespace="test")


def test_settings_in_a_namespace_prefix_topics_queues_and_pairs_once() -> None:
    demo = Settings().in_namespace("demo")
    assert demo.pairs == ["demo.BTC/USD"]
    assert demo.kafka.topic_prefix.startswith("demo.")
    assert demo.temporal.training_task_queue == "demo.training"
    again = demo.in_namespace("demo")
    assert again.kafka.topic_prefix == demo.kafka.topic_prefix
    assert [t for t, *_ in demo.forecast_targets()] == ["demo.BTC/USD"] * len(demo.forecast_targets())
    with pytest.raises(ValueError):
        Settings().in_namespace("Demo")


def test_namespace_rows_are_selected_by_pair_or_model_name_only() -> None:
    selected = {
        table.name: str(where.compile(compile_kwargs={"literal_binds": True}))
        for table, where in namespace_tables("demo")
    }
    assert {"candles", "technical_indicators", "predictions", "interval_adaptation"} <= selected.keys()
    assert "news_items" not in selected and "dead_letters" not in selected
    assert "'demo.'" in selected["candles"] and "'cryptopredict.demo-'" in selected["interval_adaptation"]


def test_a_market_key_names_the_venue_of_a_target() -> None:
    assert registered_model_name("binance:BTC/USDT", 60, 1) == "cryptopredict-binance-btcusdt-60s-h1"
    assert (
        registered_model_name("coinbase:demo.BTC/USD", 60, 1) == "cryptopredict.demo-coinbase-btcusd-60s-h1"
    )
    assert training_workflow_id("coinbase:BTC/USD", 60, 1) == "training-coinbase-BTCUSD-60s-h1"
    assert registered_model_name("coinbase:BTC/USD", 60, 1) == registered_model_name(
        "BTC/USD", 60, 1, exchange="coinbase"
    )
    with pytest.raises(ValueError, match="is on 'coinbase', not 'binance'"):
        registered_model_name("coinbase:BTC/USD", 60, 1, exchange="binance")
