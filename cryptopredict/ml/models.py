"""Forecasters of the log return over the horizon. Every model, the persistence baseline included, is
an MLflow pyfunc mapping a frame of feature rows to predicted log returns, so serving treats them alike."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from cryptopredict.models.training import CandidateKind


class PersistenceModel(PythonModel):
    """'The price stays where it is': a log return of zero."""

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        return np.zeros(len(model_input))


class XGBoostReturnModel(PythonModel):
    """An XGBoost regressor on lagged returns, carried inside a pyfunc with its feature order."""

    def __init__(self, features: list[str], booster_params: dict[str, Any] | None = None) -> None:
        self.features = list(features)
        self.booster_params = booster_params or {
            "n_estimators": 200,
            "max_depth": 3,
            "learning_rate": 0.05,
            "subsample": 0.8,
            "n_jobs": 2,
            "random_state": 0,
        }
        self.regressor: Any = None

    def fit(self, frame: pd.DataFrame, target: str) -> XGBoostReturnModel:
        from xgboost import XGBRegressor

        self.regressor = XGBRegressor(**self.booster_params).fit(frame[self.features], frame[target])
        return self

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        return np.asarray(self.regressor.predict(model_input[self.features]), dtype=float)


def fit_model(kind: CandidateKind, train: pd.DataFrame, features: list[str], target: str) -> PythonModel:
    if kind == "persistence":
        return PersistenceModel()
    return XGBoostReturnModel(features).fit(train, target)


def price_metrics(test: pd.DataFrame, predicted_log_returns: np.ndarray) -> dict[str, float]:
    """Errors on price over the held-out window, with persistence's MAE and the skill against it
    (1 - MAE / MAE_persistence: above zero only if the model beats 'no change')."""
    last = test["close"].to_numpy()
    actual = test["target_close"].to_numpy()
    errors = last * np.exp(predicted_log_returns) - actual
    mae = float(np.mean(np.abs(errors)))
    persistence_mae = float(np.mean(np.abs(last - actual)))
    return {
        "mae": mae,
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "persistence_mae": persistence_mae,
        "skill_vs_persistence": 1.0 - mae / persistence_mae if persistence_mae > 0 else 0.0,
        "n_test": float(len(test)),
    }


def choose_champion(maes: dict[str, float]) -> str:
    """The candidate with the lowest test MAE; persistence keeps the title unless strictly beaten."""
    best = min(maes, key=lambda kind: (maes[kind], kind != "persistence"))
    return best
