"""The one conversion between the pydantic `Prediction` (inside the system) and its protobuf message.

Protobuf exists only at the gRPC edge; everything else speaks `cryptopredict.models.ml.Prediction`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from cryptopredict.models.ml import Prediction
from cryptopredict.store.ledger import LiveFigures
from grpc_server.pb import predictions_pb2 as pb

_TIMESTAMP_FIELDS = ("made_at", "feature_time", "target_time")


def _timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)  # aware datetimes are converted to UTC
    return ts


def prediction_to_proto(prediction: Prediction) -> pb.Prediction:
    return pb.Prediction(
        pair=prediction.pair,
        interval_s=prediction.interval_s,
        horizon_s=prediction.horizon_s,
        made_at=_timestamp(prediction.made_at),
        feature_time=_timestamp(prediction.feature_time),
        target_time=_timestamp(prediction.target_time),
        last_price=prediction.last_price,
        predicted_price=prediction.predicted_price,
        model_name=prediction.model_name,
        model_version=prediction.model_version,
        lower_price=prediction.lower_price,
        upper_price=prediction.upper_price,
    )


def prediction_from_proto(message: pb.Prediction) -> Prediction:
    """Validate a message into the domain model; raises pydantic.ValidationError when it is not one.

    An unset timestamp becomes None rather than the 1970 epoch, so the model rejects it.
    """
    timestamps = {
        name: getattr(message, name).ToDatetime(tzinfo=UTC) if message.HasField(name) else None
        for name in _TIMESTAMP_FIELDS
    }
    return Prediction.model_validate(
        {
            "pair": message.pair,
            "interval_s": message.interval_s,
            "horizon_s": message.horizon_s,
            **timestamps,
            "last_price": message.last_price,
            "predicted_price": message.predicted_price,
            "model_name": message.model_name,
            "model_version": message.model_version,
            **{
                bound: getattr(message, bound) if message.HasField(bound) else None
                for bound in ("lower_price", "upper_price")
            },
        }
    )


def ledger_entry_to_proto(figures: LiveFigures) -> pb.LedgerEntry:
    return pb.LedgerEntry(
        model_name=figures.model_name,
        model_version=figures.model_version,
        outcomes=figures.n,
        live_mae=figures.live_mae,
        persistence_mae=figures.persistence_mae,
        skill_vs_persistence=figures.skill_vs_persistence,
        interval_coverage=figures.interval_coverage,
    )
