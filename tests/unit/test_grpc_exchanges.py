"""The exchange dimension of the gRPC server's hub and request checks: the same pair on two exchanges is
two keys, and a request that names no exchange means Kraken, as it did before exchanges existed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cryptopredict.models.ml import Prediction
from grpc_server.hub import PredictionHub, Subscription
from grpc_server.server import Targets, requested_exchange, requested_market

pytestmark = pytest.mark.unit

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
TARGETS = Targets(("BTC/USD", "ETH/USD", "coinbase:BTC/USD"), {60: (1, 5)})


def make_prediction(exchange: str = "kraken", pair: str = "BTC/USD", minute: int = 0) -> Prediction:
    feature_time = T0 + timedelta(minutes=minute)
    return Prediction(
        exchange=exchange,
        pair=pair,
        interval_s=60,
        horizon_s=60,
        made_at=feature_time + timedelta(seconds=1),
        feature_time=feature_time,
        target_time=feature_time + timedelta(seconds=60),
        last_price=100.0 + minute,
        predicted_price=101.0 + minute,
        model_name="cryptopredict-test",
        model_version="1",
    )


def queued(subscription: Subscription) -> list[tuple[str, int]]:
    got = []
    while not subscription.queue.empty():
        published = subscription.queue.get_nowait()
        assert published is not None
        prediction = published.prediction
        got.append((prediction.market, (prediction.feature_time - T0) // timedelta(minutes=1)))
    return got


def test_a_subscription_gets_the_predictions_of_its_exchange_only() -> None:
    hub = PredictionHub()
    hub.publish(make_prediction("kraken", minute=2))
    # Older than Kraken's, and still published: another market, another key.
    assert hub.publish(make_prediction("coinbase", minute=1))
    kraken = hub.subscribe(["BTC/USD"], exchange=requested_exchange(""))
    coinbase = hub.subscribe(["BTC/USD"], exchange="coinbase")
    every = hub.subscribe(exchange=requested_exchange("*"))
    hub.publish(make_prediction("coinbase", minute=3))
    hub.publish(make_prediction("kraken", pair="ETH/USD", minute=3))
    assert queued(kraken) == [("BTC/USD", 2)]
    assert queued(coinbase) == [("coinbase:BTC/USD", 1), ("coinbase:BTC/USD", 3)]
    assert queued(every) == [("coinbase:BTC/USD", 1), ("BTC/USD", 2), ("coinbase:BTC/USD", 3), ("ETH/USD", 3)]


def test_the_latest_prediction_is_kept_per_market() -> None:
    hub = PredictionHub()
    hub.publish(make_prediction("kraken", minute=2))
    hub.publish(make_prediction("coinbase", minute=1))
    kraken = hub.latest(requested_market("", "BTC/USD"), 60, 60)
    coinbase = hub.latest(requested_market("coinbase", "BTC/USD"), 60)
    assert kraken is not None and kraken.prediction == make_prediction("kraken", minute=2)
    assert coinbase is not None and coinbase.prediction == make_prediction("coinbase", minute=1)
    assert hub.latest("binance:BTC/USD", 60, 60) is None


@pytest.mark.parametrize("exchange", ["", "kraken"])
def test_no_exchange_is_kraken(exchange: str) -> None:
    assert requested_market(exchange, "BTC/USD") == "BTC/USD"
    assert TARGETS.check(["ETH/USD"], 60, 60, exchange=exchange) is None
    assert TARGETS.markets(requested_exchange(exchange)) == ["BTC/USD", "ETH/USD"]


def test_a_pair_is_checked_on_its_exchange() -> None:
    assert TARGETS.check(["BTC/USD"], 60, 60, exchange="coinbase") is None
    error = TARGETS.check(["ETH/USD"], 60, 60, exchange="coinbase")
    assert error == "unknown pair(s) ['ETH/USD'] on coinbase: this server forecasts ['BTC/USD'] there"
    assert TARGETS.markets("coinbase") == ["coinbase:BTC/USD"]
    assert TARGETS.markets(None, ["BTC/USD"]) == ["BTC/USD", "coinbase:BTC/USD"]


@pytest.mark.parametrize(
    ("exchange", "reason"),
    [
        ("ftx", "unknown exchange 'ftx': this server forecasts on exchanges ['kraken', 'coinbase']"),
        ("Coinbase", "unknown exchange 'Coinbase'"),
        ("binance", "exchange 'binance' is not served: exchanges are ['kraken', 'coinbase']"),
        ("*", "exchange '*' (every exchange) is not one exchange: name one of ['kraken', 'coinbase']"),
        ("x" * 5_000, "unknown exchange 'xxxxxxxxxxxxxxxxxxxx...:"),  # cut short, like any client value
    ],
)
def test_an_exchange_not_served_is_named(exchange: str, reason: str) -> None:
    error = TARGETS.check(["BTC/USD"], 60, 60, exchange=exchange)
    assert error is not None and error.startswith(reason), error


def test_every_exchange_only_where_a_request_names_many_pairs() -> None:
    assert TARGETS.check(["BTC/USD"], 0, zero_means_any=True, exchange="*") is None
    assert TARGETS.check([], 0, zero_means_any=True, exchange="*") is None
    error = TARGETS.check(["XRP/USD"], 0, zero_means_any=True, exchange="*")
    assert error is not None and "on any exchange" in error


def test_a_deployment_without_kraken_names_it_for_requests_without_an_exchange() -> None:
    targets = Targets(("coinbase:BTC/USD",), {60: (1,)})
    error = targets.check([], 0, zero_means_any=True)
    assert error is not None and error.startswith("exchange 'kraken' (the exchange of a request that names")
    assert targets.check([], 0, zero_means_any=True, exchange="coinbase") is None


def test_model_targets_carry_the_exchange_and_its_model_names() -> None:
    target = TARGETS.model_targets(["coinbase:BTC/USD"])[0]
    assert (target.exchange, target.pair, target.market) == ("coinbase", "BTC/USD", "coinbase:BTC/USD")
    assert target.name == "cryptopredict-coinbase-btcusd-60s-h1"
    kraken = TARGETS.model_targets(["BTC/USD"])[0]
    assert (kraken.exchange, kraken.pair, kraken.name) == ("kraken", "BTC/USD", "cryptopredict-btcusd-60s-h1")
