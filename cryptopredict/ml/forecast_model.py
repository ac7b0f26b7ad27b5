"""The models-from-code file of every forecaster (see `cryptopredict.ml.pyfunc`).

MLflow stores a copy of this file in each logged model and executes it at load time instead of
unpickling an object; `set_model` hands it the pyfunc, whose `load_context` then reads the model's
artifacts. The logic lives in the package so this file stays a stable two-liner.
"""

from __future__ import annotations

from mlflow.models import set_model

from cryptopredict.ml.pyfunc import ForecastPythonModel

set_model(ForecastPythonModel())
