"""The one conversion between the pydantic `Prediction` (inside the system) and its protobuf message.

Protobuf exists only at the gRPC edge; everything else speaks `cryptopredict.models.ml.Prediction`.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from typing import NamedTuple

from google.protobuf.timestamp_pb2 import Timestamp

from cryptopredict.ml.live import LiveFigures
from cryptopredict.ml.registry import AliasedVersions, VersionSummary
from cryptopredict.models.ml import Prediction, QuantilePrice
from cryptopredict.topics import KRAKEN, market_key
from grpc_server.pb import predictions_pb2 as pb

_TIMESTAMP_FIELDS = ("made_at", "feature_time", "target_time")
# Optional doubles: unset in the message exactly when None in the model (0.0 would be a value).
_OPTIONAL_FIELDS = ("lower_price", "upper_price", "interval_level", "predicted_volatility")


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
        interval_level=prediction.interval_level,
        quantiles=[pb.QuantilePrice(level=q.level, price=q.price) for q in prediction.quantiles],
        predicted_volatility=prediction.predicted_volatility,
        volatility_regime=prediction.volatility_regime or "",
        exchange=prediction.exchange,
    )


def only_quantiles(prediction: Prediction, levels: Collection[float], tolerance: float = 0.0) -> Prediction:
    """`prediction` carrying only its quantiles at `levels`, give or take `tolerance`."""
    kept = [q for q in prediction.quantiles if any(abs(q.level - level) <= tolerance for level in levels)]
    return prediction.model_copy(update={"quantiles": kept})


def prediction_response_bytes(prediction: Prediction) -> bytes:
    """The encoded StreamPredictionsResponse, which is also the encoded GetLatestPredictionResponse: both
    messages are `Prediction prediction = 1` and nothing else (tests/unit/test_grpc_convert.py checks it)."""
    return pb.StreamPredictionsResponse(prediction=prediction_to_proto(prediction)).SerializeToString()


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
            **{name: getattr(message, name) if message.HasField(name) else None for name in _OPTIONAL_FIELDS},
            "quantiles": [QuantilePrice(level=q.level, price=q.price) for q in message.quantiles],
            # proto3 strings have no "unset": the empty string is the unknown regime.
            "volatility_regime": message.volatility_regime or None,
            # Servers from before exchanges existed send none: their predictions are all of Kraken.
            "exchange": message.exchange or KRAKEN,
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
        coverage_by_regime=figures.coverage_by_regime,
        interval_score=figures.interval_score,
        kupiec_pvalue=figures.kupiec_pvalue,
        christoffersen_pvalue=figures.christoffersen_pvalue,
    )


class ModelTarget(NamedTuple):
    """One forecast target and the registered model that serves it."""

    name: str
    pair: str  # the pair on its exchange, never carrying the exchange
    interval_s: int
    horizon_s: int
    target: str = "price"
    exchange: str = KRAKEN

    @property
    def market(self) -> str:
        return market_key(self.exchange, self.pair)


def model_to_proto(
    target: ModelTarget, versions: AliasedVersions, live: dict[tuple[str, str], LiveFigures]
) -> pb.Model:
    """`live` maps (model name, version) to the version's ledger figures, where it has outcomes."""

    def version(summary: VersionSummary | None) -> pb.ModelVersion | None:
        if summary is None:
            return None
        figures = live.get((target.name, summary.version))
        return pb.ModelVersion(
            version=summary.version,
            kind=summary.kind,
            run_id=summary.run_id or "",
            created_at=_timestamp(summary.created_at),
            test_metrics=summary.test_metrics,
            reason=summary.reason,
            live=None if figures is None else ledger_entry_to_proto(figures),
        )

    return pb.Model(
        name=target.name,
        pair=target.pair,
        interval_s=target.interval_s,
        horizon_s=target.horizon_s,
        target=target.target,
        exchange=target.exchange,
        champion=version(versions.champion),
        challenger=version(versions.challenger),
    )
