"""The pydantic <-> protobuf conversion of `Prediction` at the gRPC edge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from cryptopredict.models.ml import Prediction
from grpc_server.convert import prediction_from_proto, prediction_response_bytes, prediction_to_proto
from grpc_server.pb import predictions_pb2 as pb

pytestmark = pytest.mark.unit


def make_prediction(**overrides: object) -> Prediction:
    feature_time = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    fields: dict[str, object] = {
        "pair": "BTC/USD",
        "interval_s": 60,
        "horizon_s": 300,
        "made_at": feature_time + timedelta(seconds=1, microseconds=123456),
        "feature_time": feature_time,
        "target_time": feature_time + timedelta(seconds=300),
        "last_price": 64_000.5,
        "predicted_price": 64_012.25,
        "model_name": "cryptopredict-btcusd-60s-h5",
        "model_version": "7",
    }
    return Prediction.model_validate(fields | overrides)


@pytest.mark.parametrize("bounds", [{}, {"lower_price": 63_900.0, "upper_price": 64_100.75}])
def test_round_trip_is_lossless(bounds: dict[str, float]) -> None:
    prediction = make_prediction(**bounds)
    message = prediction_to_proto(prediction)
    assert prediction_from_proto(message) == prediction
    # Also through the wire format, as a client would see it.
    assert prediction_from_proto(pb.Prediction.FromString(message.SerializeToString())) == prediction
    # A model without an interval leaves the bounds unset, not 0.
    assert message.HasField("lower_price") == bool(bounds)


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
