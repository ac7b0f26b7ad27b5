"""The pydantic <-> protobuf conversion of `Prediction` at the gRPC edge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from factories import prediction as make_prediction
from pydantic import ValidationError

from cryptopredict.models.ml import Prediction, QuantilePrice
from grpc_server.convert import (
    only_quantiles,
    prediction_from_proto,
    prediction_response_bytes,
    prediction_to_proto,
)
from grpc_server.pb import predictions_pb2 as pb

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("bounds", [{}, {"lower_price": 63_900.0, "upper_price": 64_100.75}])
def test_round_trip_is_lossless(bounds: dict[str, float]) -> None:
    prediction = make_prediction(**bounds)
    message = prediction_to_proto(prediction)
    assert prediction_from_proto(message) == prediction
    # Also through the wire format, as a client would see it.
    assert prediction_from_proto(pb.Prediction.FromString(message.SerializeToString())) == prediction
    # A model without an interval leaves the bounds unset, not 0.
    assert message.HasField("lower_price") == bool(bounds)


UNCERTAINTY = {
    "lower_price": 63_900.0,
    "upper_price": 64_100.75,
    "interval_level": 0.8125,
    "quantiles": [
        QuantilePrice(level=0.1, price=63_950.5),
        QuantilePrice(level=0.5, price=64_012.25),
        QuantilePrice(level=0.9, price=64_080.0),
    ],
    "predicted_volatility": 0.00042,
    "volatility_regime": "wild",
}


@pytest.mark.parametrize(
    "fields",
    [
        UNCERTAINTY,
        # Zeros are values, not "unset": they must survive the trip.
        {"predicted_volatility": 0.0},
        {"volatility_regime": "calm"},
        {"quantiles": [QuantilePrice(level=0.5, price=64_000.0)]},
    ],
    ids=["all", "zero-volatility", "regime-only", "one-quantile"],
)
def test_uncertainty_fields_round_trip(fields: dict[str, object]) -> None:
    prediction = make_prediction(**fields)
    message = prediction_to_proto(prediction)
    assert prediction_from_proto(message) == prediction
    assert prediction_from_proto(pb.Prediction.FromString(message.SerializeToString())) == prediction


def test_uncertainty_fields_absent_stay_absent() -> None:
    prediction = make_prediction()
    message = prediction_to_proto(prediction)
    assert not message.HasField("interval_level") and not message.HasField("predicted_volatility")
    assert list(message.quantiles) == [] and message.volatility_regime == ""
    # Nothing of them is on the wire: an old client sees the message it always saw.
    present = {field.name for field, _ in pb.Prediction.FromString(message.SerializeToString()).ListFields()}
    assert present.isdisjoint({"interval_level", "quantiles", "predicted_volatility", "volatility_regime"})
    back = prediction_from_proto(message)
    assert back.interval_level is None and back.predicted_volatility is None
    assert back.quantiles == [] and back.volatility_regime is None


def test_set_fields_are_encoded_as_given() -> None:
    message = prediction_to_proto(make_prediction(**UNCERTAINTY))
    assert message.interval_level == 0.8125 and message.predicted_volatility == 0.00042
    assert [(q.level, q.price) for q in message.quantiles] == [
        (0.1, 63_950.5),
        (0.5, 64_012.25),
        (0.9, 64_080.0),
    ]
    assert message.volatility_regime == "wild"


def test_an_unknown_regime_or_disordered_quantiles_are_rejected() -> None:
    message = prediction_to_proto(make_prediction(**UNCERTAINTY))
    message.volatility_regime = "stormy"
    with pytest.raises(ValidationError, match="volatility_regime"):
        prediction_from_proto(message)
    message = prediction_to_proto(make_prediction(**UNCERTAINTY))
    message.quantiles.reverse()
    with pytest.raises(ValidationError, match="ascending"):
        prediction_from_proto(message)


def test_only_quantiles_keeps_the_requested_levels() -> None:
    prediction = make_prediction(**UNCERTAINTY)
    assert [q.level for q in only_quantiles(prediction, [0.9, 0.1]).quantiles] == [0.1, 0.9]
    assert [q.level for q in only_quantiles(prediction, [1 - 0.9], 1e-9).quantiles] == [0.1]
    assert only_quantiles(prediction, [0.25]).quantiles == []
    assert only_quantiles(prediction, [0.5]).predicted_price == prediction.predicted_price


def test_timestamps_are_utc_with_microseconds() -> None:
    message = prediction_to_proto(make_prediction())
    assert message.made_at.seconds == int(datetime(2024, 5, 1, 12, 0, 1, tzinfo=UTC).timestamp())
    assert message.made_at.nanos == 123_456_000


def test_non_utc_input_keeps_the_instant() -> None:
    cest = timezone(timedelta(hours=2))
    prediction = make_prediction(made_at=datetime(2024, 5, 1, 14, 0, 1, tzinfo=cest))
    back = prediction_from_proto(prediction_to_proto(prediction))
    assert back.made_at == datetime(2024, 5, 1, 12, 0, 1, tzinfo=UTC)
    assert back.made_at.tzinfo == UTC


def test_proto_mirrors_every_model_field() -> None:
    # A field added to the model but not to the proto (or the reverse) would be dropped silently.
    assert set(pb.Prediction.DESCRIPTOR.fields_by_name) == set(Prediction.model_fields)


def test_the_exchange_travels_and_none_means_kraken() -> None:
    coinbase = make_prediction(exchange="coinbase")
    message = prediction_to_proto(coinbase)
    assert message.exchange == "coinbase" and prediction_from_proto(message) == coinbase
    assert prediction_to_proto(make_prediction()).exchange == "kraken"
    # A server from before exchanges sends none: its predictions were all of Kraken.
    message.ClearField("exchange")
    assert prediction_from_proto(message) == make_prediction()


def test_unset_timestamp_is_rejected_not_read_as_1970() -> None:
    message = prediction_to_proto(make_prediction())
    message.ClearField("target_time")
    with pytest.raises(ValidationError, match="target_time"):
        prediction_from_proto(message)


def test_invalid_message_is_rejected() -> None:
    message = prediction_to_proto(make_prediction())
    message.interval_s = 0
    with pytest.raises(ValidationError, match="interval_s"):
        prediction_from_proto(message)


def test_one_encoding_is_both_the_stream_and_the_unary_response() -> None:
    # The hub encodes each prediction once and the server sends those bytes for both RPCs.
    prediction = make_prediction(lower_price=63_900.0, upper_price=64_100.75)
    wire = prediction_response_bytes(prediction)
    for response_type in (pb.StreamPredictionsResponse, pb.GetLatestPredictionResponse):
        assert [(f.name, f.number) for f in response_type.DESCRIPTOR.fields] == [("prediction", 1)]
        response = response_type.FromString(wire)
        assert prediction_from_proto(response.prediction) == prediction
        assert response.SerializeToString() == wire
