import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Prediction(_message.Message):
    __slots__ = ("pair", "interval_s", "horizon_s", "made_at", "feature_time", "target_time", "last_price", "predicted_price", "model_name", "model_version", "lower_price", "upper_price", "interval_level", "quantiles", "predicted_volatility", "volatility_regime", "exchange")
    PAIR_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    HORIZON_S_FIELD_NUMBER: _ClassVar[int]
    MADE_AT_FIELD_NUMBER: _ClassVar[int]
    FEATURE_TIME_FIELD_NUMBER: _ClassVar[int]
    TARGET_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_PRICE_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_PRICE_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LOWER_PRICE_FIELD_NUMBER: _ClassVar[int]
    UPPER_PRICE_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_LEVEL_FIELD_NUMBER: _ClassVar[int]
    QUANTILES_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_VOLATILITY_FIELD_NUMBER: _ClassVar[int]
    VOLATILITY_REGIME_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    pair: str
    interval_s: int
    horizon_s: int
    made_at: _timestamp_pb2.Timestamp
    feature_time: _timestamp_pb2.Timestamp
    target_time: _timestamp_pb2.Timestamp
    last_price: float
    predicted_price: float
    model_name: str
    model_version: str
    lower_price: float
    upper_price: float
    interval_level: float
    quantiles: _containers.RepeatedCompositeFieldContainer[QuantilePrice]
    predicted_volatility: float
    volatility_regime: str
    exchange: str
    def __init__(self, pair: _Optional[str] = ..., interval_s: _Optional[int] = ..., horizon_s: _Optional[int] = ..., made_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., feature_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., target_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_price: _Optional[float] = ..., predicted_price: _Optional[float] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., lower_price: _Optional[float] = ..., upper_price: _Optional[float] = ..., interval_level: _Optional[float] = ..., quantiles: _Optional[_Iterable[_Union[QuantilePrice, _Mapping]]] = ..., predicted_volatility: _Optional[float] = ..., volatility_regime: _Optional[str] = ..., exchange: _Optional[str] = ...) -> None: ...

class QuantilePrice(_message.Message):
    __slots__ = ("level", "price")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    level: float
    price: float
    def __init__(self, level: _Optional[float] = ..., price: _Optional[float] = ...) -> None: ...

class StreamPredictionsRequest(_message.Message):
    __slots__ = ("pairs", "interval_s", "horizon_s", "target", "exchange")
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    HORIZON_S_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    pairs: _containers.RepeatedScalarFieldContainer[str]
    interval_s: int
    horizon_s: int
    target: str
    exchange: str
    def __init__(self, pairs: _Optional[_Iterable[str]] = ..., interval_s: _Optional[int] = ..., horizon_s: _Optional[int] = ..., target: _Optional[str] = ..., exchange: _Optional[str] = ...) -> None: ...

class StreamPredictionsResponse(_message.Message):
    __slots__ = ("prediction",)
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    prediction: Prediction
    def __init__(self, prediction: _Optional[_Union[Prediction, _Mapping]] = ...) -> None: ...

class GetLatestPredictionRequest(_message.Message):
    __slots__ = ("pair", "interval_s", "horizon_s", "quantile_levels", "target", "exchange")
    PAIR_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    HORIZON_S_FIELD_NUMBER: _ClassVar[int]
    QUANTILE_LEVELS_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    pair: str
    interval_s: int
    horizon_s: int
    quantile_levels: _containers.RepeatedScalarFieldContainer[float]
    target: str
    exchange: str
    def __init__(self, pair: _Optional[str] = ..., interval_s: _Optional[int] = ..., horizon_s: _Optional[int] = ..., quantile_levels: _Optional[_Iterable[float]] = ..., target: _Optional[str] = ..., exchange: _Optional[str] = ...) -> None: ...

class GetLatestPredictionResponse(_message.Message):
    __slots__ = ("prediction",)
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    prediction: Prediction
    def __init__(self, prediction: _Optional[_Union[Prediction, _Mapping]] = ...) -> None: ...

class GetLedgerRequest(_message.Message):
    __slots__ = ("pair", "interval_s", "model_version", "since", "exchange")
    PAIR_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    pair: str
    interval_s: int
    model_version: str
    since: _timestamp_pb2.Timestamp
    exchange: str
    def __init__(self, pair: _Optional[str] = ..., interval_s: _Optional[int] = ..., model_version: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., exchange: _Optional[str] = ...) -> None: ...

class LedgerEntry(_message.Message):
    __slots__ = ("model_name", "model_version", "outcomes", "live_mae", "persistence_mae", "skill_vs_persistence", "interval_coverage", "coverage_by_regime", "interval_score", "kupiec_pvalue", "christoffersen_pvalue")
    class CoverageByRegimeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    LIVE_MAE_FIELD_NUMBER: _ClassVar[int]
    PERSISTENCE_MAE_FIELD_NUMBER: _ClassVar[int]
    SKILL_VS_PERSISTENCE_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_COVERAGE_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_BY_REGIME_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    KUPIEC_PVALUE_FIELD_NUMBER: _ClassVar[int]
    CHRISTOFFERSEN_PVALUE_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    outcomes: int
    live_mae: float
    persistence_mae: float
    skill_vs_persistence: float
    interval_coverage: float
    coverage_by_regime: _containers.ScalarMap[str, float]
    interval_score: float
    kupiec_pvalue: float
    christoffersen_pvalue: float
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., outcomes: _Optional[int] = ..., live_mae: _Optional[float] = ..., persistence_mae: _Optional[float] = ..., skill_vs_persistence: _Optional[float] = ..., interval_coverage: _Optional[float] = ..., coverage_by_regime: _Optional[_Mapping[str, float]] = ..., interval_score: _Optional[float] = ..., kupiec_pvalue: _Optional[float] = ..., christoffersen_pvalue: _Optional[float] = ...) -> None: ...

class GetLedgerResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[LedgerEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[LedgerEntry, _Mapping]]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("pairs", "exchange")
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    pairs: _containers.RepeatedScalarFieldContainer[str]
    exchange: str
    def __init__(self, pairs: _Optional[_Iterable[str]] = ..., exchange: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("pair", "interval_s", "horizon_s", "target", "exchange")
    PAIR_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    HORIZON_S_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    pair: str
    interval_s: int
    horizon_s: int
    target: str
    exchange: str
    def __init__(self, pair: _Optional[str] = ..., interval_s: _Optional[int] = ..., horizon_s: _Optional[int] = ..., target: _Optional[str] = ..., exchange: _Optional[str] = ...) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: Model
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("name", "pair", "interval_s", "horizon_s", "champion", "challenger", "target", "exchange")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PAIR_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    HORIZON_S_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_FIELD_NUMBER: _ClassVar[int]
    CHALLENGER_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    pair: str
    interval_s: int
    horizon_s: int
    champion: ModelVersion
    challenger: ModelVersion
    target: str
    exchange: str
    def __init__(self, name: _Optional[str] = ..., pair: _Optional[str] = ..., interval_s: _Optional[int] = ..., horizon_s: _Optional[int] = ..., champion: _Optional[_Union[ModelVersion, _Mapping]] = ..., challenger: _Optional[_Union[ModelVersion, _Mapping]] = ..., target: _Optional[str] = ..., exchange: _Optional[str] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("version", "kind", "run_id", "created_at", "test_metrics", "reason", "live")
    class TestMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    TEST_METRICS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    version: str
    kind: str
    run_id: str
    created_at: _timestamp_pb2.Timestamp
    test_metrics: _containers.ScalarMap[str, float]
    reason: str
    live: LedgerEntry
    def __init__(self, version: _Optional[str] = ..., kind: _Optional[str] = ..., run_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., test_metrics: _Optional[_Mapping[str, float]] = ..., reason: _Optional[str] = ..., live: _Optional[_Union[LedgerEntry, _Mapping]] = ...) -> None: ...
