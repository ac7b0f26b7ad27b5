"""The main job end to end, as `make demo` runs it, plus the tools a person would point at it."""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import mlflow
import pytest
from sqlalchemy import select

from cryptopredict.cli import DEMO_ANCHOR
from cryptopredict.cli.demo import run_demo
from cryptopredict.ml import pyfunc, registry
from cryptopredict.orchestration import temporal_client
from cryptopredict.settings import Settings
from cryptopredict.simulators.markets import synthetic_candles
from cryptopredict.store.candles import async_engine, upsert_candles
from cryptopredict.store.migrate import migrate
from cryptopredict.store.schema import candles, predictions, technical_indicators
from cryptopredict.topics import registered_model_name

pytestmark = pytest.mark.e2e


async def test_demo_streams_predictions_of_the_champion_and_leaves_a_live_target_alone(settings):
    live = await LiveTarget.seeded(settings)
    before = await live.snapshot()
    started = datetime.now(UTC)
    summary = await run_demo(settings, min_candles=200, predictions=5, timeout_s=600)
    assert summary["model_version"].startswith("cryptopredict.demo-btcusd-60s-h1/")
    # Two venues at once, each through its own protocol, feed and candles.
    assert set(summary["trades_by_venue"]) == {"kraken", "coinbase"}
    assert min(summary["trades_by_venue"].values()) > 1000
    assert summary["candles"] >= 200
    assert summary["predictions_streamed"] == 5
    name, _, rest = summary["model_version"].partition("/")
    version = rest.split(" ")[0]
    champion = mlflow.MlflowClient(settings.mlflow.tracking_uri).get_model_version_by_alias(name, "champion")
    assert str(champion.version) == version
    assert summary["temporal_ui"].startswith(f"http://127.0.0.1:{settings.temporal.ui_port}/")
    # The predictions are in the feature store too (a promotion mid-run gives some of another version).
    assert stored_predictions(settings, name, started) >= 5
    # The live BTC/USD target on the same stack: its rows, champion and schedules are as they were.
    assert await live.snapshot() == before


@dataclass
class LiveTarget:
    """What a live Kraken BTC/USD deployment on this stack owns, with candles on the demo's own dates (so a
    demo writing to the live pair would change them) and a champion (so a demo promoting there would move it)."""

    settings: Settings
    pair: str = "BTC/USD"

    @classmethod
    async def seeded(cls, settings: Settings) -> LiveTarget:
        live = cls(settings)
        migrate(settings.postgres)  # a fresh stack: the demo's stream worker has not made the tables yet
        engine = async_engine(settings.postgres)
        try:
            seeded = synthetic_candles(live.pair, 60, 300, DEMO_ANCHOR, seed=5)
            await upsert_candles(engine, seeded)
        finally:
            await engine.dispose()
        mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
        mlflow.set_experiment("cryptopredict-live-target")
        registry.ensure_persistence_champion(
            mlflow.MlflowClient(),
            registered_model_name(live.pair, 60, 1),
            lambda: pyfunc.log_persistence("persistence-live", 60, 1),
        )
        return live

    async def snapshot(self) -> dict[str, Any]:
        engine = async_engine(self.settings.postgres)
        try:
            async with engine.connect() as conn:
                rows = {
                    table.name: hashlib.sha256(
                        repr(
                            sorted(
                                map(tuple, await conn.execute(select(table).where(table.c.pair == self.pair)))
                            )
                        ).encode()
                    ).hexdigest()
                    for table in (candles, technical_indicators, predictions)
                }
        finally:
            await engine.dispose()
        client = mlflow.MlflowClient(self.settings.mlflow.tracking_uri)
        champion = registry.current_champion(client, registered_model_name(self.pair, 60, 1))
        temporal = await temporal_client(self.settings)
        schedules = sorted([s.id async for s in await temporal.list_schedules()])
        return {"rows": rows, "champion": champion and champion.version, "schedules": schedules}


def stored_predictions(settings, model_name: str, since: datetime) -> int:
    from sqlalchemy import func, select

    from cryptopredict.store.candles import sync_engine
    from cryptopredict.store.schema import predictions

    engine = sync_engine(settings.postgres)
    query = select(func.count()).where(
        predictions.c.model_name == model_name,
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
