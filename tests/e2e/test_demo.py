"""The main job end to end, as `make demo` runs it, plus the tools a person would point at it."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime

import mlflow
import pytest

from cryptopredict.cli.demo import run_demo

pytestmark = pytest.mark.e2e


async def test_demo_streams_predictions_of_the_champion(settings):
    started = datetime.now(UTC)
    summary = await run_demo(settings, min_candles=200, predictions=5, timeout_s=600)
    assert summary["trades"] > 1000
    assert summary["candles"] >= 200
    assert summary["predictions_streamed"] == 5
    name, _, rest = summary["model_version"].partition("/")
    version = rest.split(" ")[0]
    champion = mlflow.MlflowClient(settings.mlflow.tracking_uri).get_model_version_by_alias(name, "champion")
    assert str(champion.version) == version
    assert summary["temporal_ui"].startswith(f"http://127.0.0.1:{settings.temporal.ui_port}/")
    # The predictions are in the feature store too, with the version that made them.
    assert stored_predictions(settings, name, version, started) >= 5


def stored_predictions(settings, model_name: str, model_version: str, since: datetime) -> int:
    from sqlalchemy import func, select

    from cryptopredict.store.candles import sync_engine
    from cryptopredict.store.schema import predictions

    engine = sync_engine(settings.postgres)
    query = select(func.count()).where(
        predictions.c.model_name == model_name,
        predictions.c.model_version == model_version,
        predictions.c.made_at >= since,
    )
    try:
        with engine.connect() as conn:
            return int(conn.execute(query).scalar_one())
    finally:
        engine.dispose()


def test_tctl_lists_training_workflows(settings):
    """tctl is the older Temporal CLI; the note records what it can still do against this server."""
    from cryptopredict.stack import install_tools

    tctl = install_tools(settings)["tctl"]
    completed = subprocess.run(
        [
            str(tctl),
            "--address",
            settings.temporal.address,
            "--namespace",
            settings.temporal.namespace,
            "workflow",
            "list",
            "--more",
            "false",
            "--pagesize",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
