"""The naming scheme of per-target registered models, retrain workflows and schedules: today's Kraken
price names never change; volatility, another exchange and a demo/test namespace extend them into names
that cannot collide."""

from __future__ import annotations

import itertools

import pytest

from cryptopredict.topics import registered_model_name, training_schedule_id, training_workflow_id

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
