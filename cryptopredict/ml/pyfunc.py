"""One MLflow pyfunc for every forecaster family, stored without pickle.

A model is logged with MLflow's models-from-code: the logged "model" is the small code file
`forecast_model.py` plus data artifacts, never a cloudpickled object, so loading a model cannot run code
hidden in a blob. The artifacts are `spec.json` (family, feature order, conformal interval, horizon and,
for linear models, the fitted numbers) and, for XGBoost, the booster in UBJ. `load_context` rebuilds the
predictor from these files alone.

Predictions are log returns over the horizon with split-conformal bounds, all in log-return space:
price = close * exp(log_return). A volatility model (spec `target` "volatility", families naive, har and
xgboost, see `cryptopredict.ml.volatility_target`) predicts one column, `volatility`: the mean absolute
log return per candle over the horizon, from the log trailing volatilities it takes as inputs.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext
from pydantic import BaseModel, Field, model_validator

from cryptopredict.ml.adaptive import GRID_LEVELS, AdaptiveInterval, Calibration, quantile_at

ForecastFamily = Literal["persistence", "linear", "xgboost", "naive", "har"]
ForecastTarget = Literal["price", "volatility"]
TARGET_FAMILIES: dict[str, tuple[str, ...]] = {
    "price": ("persistence", "linear", "xgboost"),
    "volatility": ("naive", "har", "xgboost"),
}

# The models-from-code file: MLflow copies it into the model and executes it at load time.
MODEL_CODE_PATH = Path(__file__).with_name("forecast_model.py")
SPEC_ARTIFACT = "spec"
BOOSTER_ARTIFACT = "booster"
SPEC_FILE = "spec.json"
BOOSTER_FILE = "booster.ubj"
OUTPUT_COLUMNS = ["log_return", "lower", "upper"]
VOLATILITY_COLUMNS = ["volatility"]
SPEC_FORMAT_VERSION = 1


class LinearParams(BaseModel):
    """A standardised linear model as plain numbers: ((x - mean) / scale) @ coef + intercept."""

    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float


class HarParams(BaseModel):
    """A log-linear HAR model: volatility = exp(intercept + coefficients . features)."""

    intercept: float
    coefficients: list[float]


class ForecastSpec(BaseModel):
    """Everything needed to serve a model besides the booster file; written as spec.json."""

    format_version: int = SPEC_FORMAT_VERSION
    # What is forecast: the price (as a log return with an interval) or the volatility over the horizon.
    target: ForecastTarget = "price"
    family: ForecastFamily
    features: list[str]
    # Split-conformal offsets added to the predicted log return: (lower, upper), at `coverage`.
    interval: tuple[float, float]
    coverage: float | None = Field(default=None, gt=0, lt=1)
    # Conformal quantiles of the residuals at adaptive.GRID_LEVELS: the constant-width quantiles, served
    # where the volatility inputs are unknown; None for a model calibrated before they existed.
    constant_quantiles: list[float] | None = None
    # The volatility-scaled, per-regime interval (cryptopredict.ml.adaptive); None: constant width only.
    adaptive: AdaptiveInterval | None = None
    # The horizon the model was trained for; None when the caller did not say.
    interval_s: int | None = Field(default=None, gt=0)
    horizon_candles: int | None = Field(default=None, gt=0)
    linear: LinearParams | None = None
    har: HarParams | None = None
    # The volatility estimator the model was trained on (volatility_target.Estimator); None for prices.
    estimator: str | None = None

    @property
    def output_columns(self) -> list[str]:
        return VOLATILITY_COLUMNS if self.target == "volatility" else OUTPUT_COLUMNS

    @property
    def horizon_s(self) -> int | None:
        if self.interval_s is None or self.horizon_candles is None:
            return None
        return self.interval_s * self.horizon_candles

    @model_validator(mode="after")
    def _consistent(self) -> ForecastSpec:
        if self.format_version != SPEC_FORMAT_VERSION:
            raise ValueError(f"unsupported spec format_version {self.format_version}")
        if len(set(self.features)) != len(self.features):
            raise ValueError(f"duplicate feature names in {self.features}")
        lower, upper = self.interval
        if not (math.isfinite(lower) and math.isfinite(upper) and lower <= upper):
            raise ValueError(f"interval offsets must be finite with lower <= upper, got {self.interval}")
        if self.constant_quantiles is not None and len(self.constant_quantiles) != len(GRID_LEVELS):
            raise ValueError(f"constant_quantiles needs one value per grid level ({len(GRID_LEVELS)})")
        if self.family not in TARGET_FAMILIES[self.target]:
            raise ValueError(f"family {self.family!r} does not forecast the {self.target}")
        if (self.target == "volatility") != (self.estimator is not None):
            raise ValueError("a volatility estimator is required for, and only for, the volatility target")
        if self.family == "naive" and len(self.features) != 1:
            raise ValueError("the naive volatility model takes exactly one input, its trailing window")
        if (self.family == "har") != (self.har is not None):
            raise ValueError("HAR parameters are required for, and only for, the har family")
        if self.har is not None and len(self.har.coefficients) != len(self.features):
            raise ValueError(f"HAR parameters must have one coefficient per feature ({len(self.features)})")
        if (self.family == "linear") != (self.linear is not None):
            raise ValueError("linear parameters are required for, and only for, the linear family")
        if self.linear is not None:
            n = len(self.features)
            sizes = {len(self.linear.mean), len(self.linear.scale), len(self.linear.coef)}
            if sizes != {n}:
                raise ValueError(f"linear parameters must have one value per feature ({n})")
        return self


def spec_from_estimator(
    family: str,
    estimator: Any,
    features: list[str],
    interval: tuple[float, float],
    *,
    interval_s: int | None = None,
    horizon_candles: int | None = None,
    calibration: Calibration | None = None,
    coverage: float | None = None,
) -> ForecastSpec:
    """The spec of a fitted estimator; `family` is checked against ForecastFamily (ValueError). The
    estimator's feature names, when it recorded them, must match `features` in order: a silent
    reordering would pair every coefficient or split with the wrong column."""
    if family == "persistence":
        if estimator is not None:
            raise ValueError("the persistence model has no estimator; pass None")
    else:
        fitted_names = getattr(estimator, "feature_names_in_", None)
        if fitted_names is not None and list(fitted_names) != list(features):
            raise ValueError(f"estimator was fitted on {list(fitted_names)}, not on {features}")
    return ForecastSpec(
        family=cast(ForecastFamily, family),
        features=list(features),
        interval=interval,
        coverage=coverage,
        constant_quantiles=calibration.constant if calibration else None,
        adaptive=calibration.adaptive if calibration else None,
        interval_s=interval_s,
        horizon_candles=horizon_candles,
        linear=_linear_params(estimator, len(features)) if family == "linear" else None,
    )


def calibrated_interval(calibration: Calibration, coverage: float) -> tuple[float, float]:
    """The constant-width (lower, upper) offsets at `coverage`, read off the calibration's grid."""
    tail = (1.0 - coverage) / 2.0
    return (
        quantile_at(GRID_LEVELS, calibration.constant, tail),
        quantile_at(GRID_LEVELS, calibration.constant, 1.0 - tail),
    )


def _linear_params(estimator: Any, n_features: int) -> LinearParams:
    """Extracts [StandardScaler ->] linear regressor (ElasticNet, Ridge, ...) into plain numbers, so the
    model is stored as JSON and predicted with numpy, with no sklearn object to unpickle."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    steps = [step for _, step in estimator.steps] if isinstance(estimator, Pipeline) else [estimator]
    *preprocessing, regressor = steps
    mean, scale = np.zeros(n_features), np.ones(n_features)
    if preprocessing:
        scaler = preprocessing[0]
        if len(preprocessing) > 1 or not isinstance(scaler, StandardScaler):
            raise TypeError(f"a linear model is [StandardScaler ->] regressor, got {steps}")
        if scaler.with_mean:
            mean = np.asarray(scaler.mean_, dtype=float)
        if scaler.with_std:
            scale = np.asarray(scaler.scale_, dtype=float)
    coef = np.ravel(np.asarray(regressor.coef_, dtype=float))
    if coef.size != n_features:
        raise ValueError(f"the regressor has {coef.size} coefficients for {n_features} features")
    return LinearParams(
        mean=mean.tolist(),
        scale=scale.tolist(),
        coef=coef.tolist(),
        intercept=float(np.ravel(np.asarray(regressor.intercept_, dtype=float))[0]),
    )


def write_artifacts(spec: ForecastSpec, estimator: Any, directory: Path) -> dict[str, str]:
    """Writes spec.json (and booster.ubj for XGBoost) into `directory`; returns the `artifacts` mapping
    for `mlflow.pyfunc.log_model`. The sklearn wrapper's own save keeps its metadata (best_iteration,
    missing value), so the reloaded regressor predicts exactly like the fitted one."""
    directory.mkdir(parents=True, exist_ok=True)
    spec_path = directory / SPEC_FILE
    spec_path.write_text(spec.model_dump_json(indent=2))
    artifacts = {SPEC_ARTIFACT: str(spec_path)}
    if spec.family == "xgboost":
        booster_path = directory / BOOSTER_FILE
        estimator.save_model(str(booster_path))
        artifacts[BOOSTER_ARTIFACT] = str(booster_path)
    return artifacts


def pip_requirements(family: str) -> list[str]:
    """Pinned to what is installed: inferring requirements runs the model and is slow, and unpinned ones
    would let a serving environment drift from the one that validated the model."""
    packages = ["cryptopredict", "mlflow", "numpy", "pandas", "pydantic"]
    if family == "xgboost":
        packages += ["xgboost", "scikit-learn"]  # XGBRegressor is the sklearn wrapper
    return [f"{package}=={version(package)}" for package in packages]


class ForecastPythonModel(PythonModel):
    """The pyfunc behind every logged forecaster: artifacts in, (log_return, lower, upper) out."""

    def __init__(self) -> None:
        self.spec: ForecastSpec | None = None
        self.regressor: Any = None

    def load_context(self, context: PythonModelContext) -> None:
        self.spec = ForecastSpec.model_validate_json(Path(context.artifacts[SPEC_ARTIFACT]).read_text())
        if self.spec.family == "xgboost":
            from xgboost import XGBRegressor

            self.regressor = XGBRegressor()
            self.regressor.load_model(context.artifacts[BOOSTER_ARTIFACT])

    def predict(
        self,
        context: PythonModelContext | None,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        if self.spec is None:
            raise RuntimeError("the model has no spec: load it through MLflow so load_context runs")
        if self.spec.target == "volatility":
            return predict_volatility(self.spec, self.regressor, model_input)
        return predict_log_returns(self.spec, self.regressor, model_input)


def require_features(spec: ForecastSpec, frame: pd.DataFrame) -> None:
    missing = [name for name in spec.features if name not in frame.columns]
    if missing:
        raise ValueError(f"input is missing feature(s) {missing}; the model needs {spec.features}")


def _log_returns(spec: ForecastSpec, regressor: Any, x: np.ndarray) -> np.ndarray:
    """The predicted log returns of the rows of `x` (float64, columns in the spec's feature order)."""
    if spec.family == "persistence":
        return np.zeros(len(x))
    if spec.linear is not None:
        params = spec.linear
        standardised = (x - np.asarray(params.mean)) / np.asarray(params.scale)
        return np.asarray(standardised @ np.asarray(params.coef) + params.intercept, dtype=float)
    # The array in the order the booster was fitted in (spec_from_estimator checks it): the same float
    # values as a frame of those columns, hence the same prediction.
    return np.asarray(regressor.predict(x), dtype=float)


def _log_volatilities(spec: ForecastSpec, regressor: Any, x: np.ndarray) -> np.ndarray:
    """The predicted log volatilities of the rows of `x` (float64, columns in the spec's feature order)."""
    if spec.family == "naive":
        return x[:, 0]
    if spec.har is not None:
        return np.asarray(spec.har.intercept + x @ np.asarray(spec.har.coefficients), dtype=float)
    return np.asarray(regressor.predict(x), dtype=float)


def _outputs(spec: ForecastSpec, regressor: Any, x: np.ndarray) -> dict[str, np.ndarray]:
    """Each output column of the rows of `x`: what ForecastPythonModel.predict returns, as arrays."""
    if spec.target == "volatility":
        return {"volatility": np.exp(_log_volatilities(spec, regressor, x))}
    log_return = _log_returns(spec, regressor, x)
    lower, upper = spec.interval
    return {"log_return": log_return, "lower": log_return + lower, "upper": log_return + upper}


def predict_log_returns(spec: ForecastSpec, regressor: Any, frame: pd.DataFrame) -> pd.DataFrame:
    """Columns of `frame` are taken by name in the spec's order; extra columns are ignored."""
    require_features(spec, frame)
    x = frame[spec.features].astype("float64").to_numpy()
    return pd.DataFrame(_outputs(spec, regressor, x), index=frame.index, columns=OUTPUT_COLUMNS)


def predict_volatility(spec: ForecastSpec, regressor: Any, frame: pd.DataFrame) -> pd.DataFrame:
    """The volatility forecast from log trailing volatilities: exp of the naive input, of the HAR line or
    of the boosted log; NaN where an input is unknown (warm-up), positive elsewhere."""
    require_features(spec, frame)
    x = frame[spec.features].astype("float64").to_numpy()
    return pd.DataFrame(_outputs(spec, regressor, x), index=frame.index, columns=VOLATILITY_COLUMNS)


def log_volatility_model(
    family: str,
    model: Any,
    features: list[str],
    *,
    interval_s: int,
    horizon_candles: int,
    estimator: str,
    input_example: pd.DataFrame | None,
    name: str = "model",
) -> Any:
    """Logs a volatility forecaster (family naive, har or xgboost; `model` None, a HarModel or an
    XGBRegressor on the log target) into the active MLflow run; returns MLflow's ModelInfo."""

    spec = ForecastSpec(
        target="volatility",
        family=cast(ForecastFamily, family),
        features=list(features),
        interval=(0.0, 0.0),
        interval_s=interval_s,
        horizon_candles=horizon_candles,
        har=HarParams(intercept=model.intercept, coefficients=list(model.coefficients))
        if family == "har"
        else None,
        estimator=estimator,
    )
    if family == "har" and model.smearing != 1.0:
        raise ValueError("a HAR volatility model is served without smearing (its loss is on the log scale)")
    return _log_spec(spec, model, input_example, name)


def log_naive_volatility(
    run_name: str, feature: str, interval_s: int, horizon_candles: int, estimator: str
) -> tuple[str, str]:
    """The naive volatility forecaster (the trailing mean over the horizon) logged in a new run of the
    active MLflow experiment, tagged kind=naive: (model URI, run id)."""
    import mlflow

    with mlflow.start_run(run_name=run_name) as run:
        mlflow.set_tags({"kind": "naive", "target": "volatility", "estimator": estimator})
        info = log_volatility_model(
            "naive",
            None,
            [feature],
            interval_s=interval_s,
            horizon_candles=horizon_candles,
            estimator=estimator,
            input_example=None,
        )
    return info.model_uri, run.info.run_id


def log_forecast_model(
    family: str,
    estimator: Any,
    features: list[str],
    interval: tuple[float, float],
    *,
    interval_s: int | None = None,
    horizon_candles: int | None = None,
    calibration: Calibration | None = None,
    coverage: float | None = None,
    input_example: pd.DataFrame | None,
    name: str = "model",
) -> Any:
    """Logs the forecaster into the active MLflow run and returns MLflow's ModelInfo (model_uri, run_id,
    model_id). The signature is built from the spec rather than inferred (inference runs the model and
    would make every column of the example required); the example is cut to the model's features and is
    skipped when there are none (persistence)."""

    spec = spec_from_estimator(
        family,
        estimator,
        features,
        interval,
        interval_s=interval_s,
        horizon_candles=horizon_candles,
        calibration=calibration,
        coverage=coverage,
    )
    return _log_spec(spec, estimator, input_example, name)


def log_persistence(
    run_name: str,
    interval_s: int,
    horizon_candles: int,
    calibration: Calibration | None = None,
    coverage: float = 0.8,
) -> tuple[str, str]:
    """The persistence forecaster (no features; its interval calibrated on the returns themselves, its
    residuals) logged in a new run of the active MLflow experiment, tagged kind=persistence:
    (model URI, run id). Without a calibration (no returns known yet) it has no interval."""
    import mlflow

    with mlflow.start_run(run_name=run_name) as run:
        mlflow.set_tag("kind", "persistence")
        info = log_forecast_model(
            "persistence",
            None,
            [],
            calibrated_interval(calibration, coverage) if calibration else (0.0, 0.0),
            interval_s=interval_s,
            horizon_candles=horizon_candles,
            calibration=calibration,
            coverage=coverage if calibration else None,
            input_example=None,
        )
    return info.model_uri, run.info.run_id


def _log_spec(spec: ForecastSpec, estimator: Any, input_example: pd.DataFrame | None, name: str) -> Any:
    """Logs a spec (and its booster) as the models-from-code pyfunc into the active MLflow run; the input
    example is cut to the model's features and skipped when there are none."""
    import mlflow

    example = None
    if input_example is not None and spec.features:
        example = input_example[spec.features].astype("float64")
    with tempfile.TemporaryDirectory(prefix="forecast-model-") as tmp:
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=MODEL_CODE_PATH,
            artifacts=write_artifacts(spec, estimator, Path(tmp)),
            signature=_signature(spec),
            input_example=example,
            pip_requirements=pip_requirements(spec.family),
        )


def _signature(spec: ForecastSpec) -> Any:
    """Named float inputs in spec order (none for a featureless model) and the three output columns."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema([ColSpec("double", name) for name in spec.features]) if spec.features else None
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec("double", c) for c in spec.output_columns]))


def load_forecast_model(model_uri: str) -> Any:
    """Loads a logged forecaster (runs:/, models:/name@alias, models:/<model_id>) as an MLflow pyfunc."""
    import mlflow

    return mlflow.pyfunc.load_model(model_uri)


def forecast_spec(pyfunc: Any) -> ForecastSpec:
    """The spec a loaded forecaster was built from: features, interval and horizon for serving."""
    model = pyfunc.unwrap_python_model()
    if not isinstance(model, ForecastPythonModel) or model.spec is None:
        raise TypeError(f"not a loaded forecast model: {type(model).__name__}")
    return model.spec


def single_threaded(pyfunc: Any) -> Any:
    """The loaded forecaster, its XGBoost booster (if any) set to one thread: the live path predicts one
    row at a time, and on a busy machine waking an OpenMP team per row costs more than the row itself.
    The numbers do not change (threads share out rows, never one row's sum over the trees)."""
    regressor = getattr(pyfunc.unwrap_python_model(), "regressor", None)
    if regressor is not None:
        regressor.set_params(n_jobs=1)
    return pyfunc


def predict_row(pyfunc: Any, row: Mapping[str, float]) -> dict[str, float]:
    """The prediction of a loaded forecaster from one input row (feature name -> value, extra names
    ignored), by the model's own predictor on a numpy row in its spec's feature order: the numbers
    predict_frame gives for that row, without the data frames and MLflow's schema check it pays for
    per call (milliseconds, where this takes microseconds)."""
    model = pyfunc.unwrap_python_model()
    spec = forecast_spec(pyfunc)
    missing = [name for name in spec.features if name not in row]
    if missing:
        raise ValueError(f"input is missing feature(s) {missing}; the model needs {spec.features}")
    x = np.array([[row[name] for name in spec.features]], dtype=np.float64)
    return {name: float(values[0]) for name, values in _outputs(spec, model.regressor, x).items()}


def predict_frame(pyfunc: Any, frame: pd.DataFrame) -> pd.DataFrame:
    """Predictions of a loaded forecaster. Missing features raise a ValueError naming them before MLflow's
    schema check would, and only the model's features are passed on, so extra columns never trip it."""
    spec = forecast_spec(pyfunc)
    require_features(spec, frame)
    result = pyfunc.predict(frame[spec.features].astype("float64"))
    return pd.DataFrame(result, columns=spec.output_columns).set_axis(frame.index)
