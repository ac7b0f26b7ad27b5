"""The main job end to end: replay exchange -> feed -> Faust candles -> store -> Temporal training ->
MLflow champion -> Faust predictions -> gRPC stream.

Each run works in the namespace `demo` (pair `demo.BTC/USD`, model `cryptopredict.demo-btcusd-60s-h1`,
topics and task queues under `demo.`) and reads the venues it is given (Kraken and Coinbase by default: a
replay exchange speaking each venue's protocol, and a feed per venue; it trains and streams Kraken's), so it never writes where a live BTC/USD deployment on the same
stack does, and uses its own topic prefix (fresh Faust state and offsets). It replays the same seeded
trades, so reruns are reproducible and upsert the same candle rows. Services of the run are child processes
with logs under `.local/logs/demo/`; they are stopped when the run ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptopredict import topics
from cryptopredict.kafka_admin import read_topic, topic_message_count
from cryptopredict.models import TradeBatch
from cryptopredict.offsets import STOP_GRACE_S
from cryptopredict.settings import Settings

logger = logging.getLogger(__name__)

# What the replay exchange trades; the run names it `demo.BTC/USD` in its own namespace.
VENUE_PAIR = "BTC/USD"
# The same coin on each venue, as that venue quotes it.
VENUE_PAIRS = {"kraken": VENUE_PAIR, "coinbase": VENUE_PAIR, "binance": "BTC/USDT"}
NAMESPACE = "demo"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServiceGroup:
    """Child processes of one run, each logging to its own file, all stopped together."""

    log_dir: Path
    env: dict[str, str]
    processes: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)

    async def start(self, name: str, *args: str) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{name}.log").open("wb")
        # Each in its own process group, so a stop reaches a service's children too (the stream supervisor's).
        self.processes[name] = await asyncio.create_subprocess_exec(
            *args, stdout=log, stderr=asyncio.subprocess.STDOUT, env=self.env, start_new_session=True
        )
        log.close()

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.returncode is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}; see {self.log_dir / name}.log")

    async def stop(self) -> None:
        for process in self.processes.values():
            if process.returncode is None:
                process.terminate()
        for process in self.processes.values():
            try:
                # Longer than the stream supervisor's own grace period, which then kills its worker.
                await asyncio.wait_for(process.wait(), STOP_GRACE_S + 10)
            except TimeoutError:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # whatever is left of the group
            await process.wait()


async def candle_rows_since(settings: Settings, market: str, since: datetime) -> int:
    from sqlalchemy import func, select

    from cryptopredict.store.candles import async_engine
    from cryptopredict.store.schema import candles

    exchange, pair = topics.split_market(market)
    engine = async_engine(settings.postgres)
    try:
        async with engine.connect() as conn:
            query = (
                select(func.count())
                .select_from(candles)
                .where(
                    candles.c.exchange == exchange,
                    candles.c.pair == pair,
                    candles.c.written_at >= since,
                    candles.c.interval_s == settings.features.interval_s,
                )
            )
            return int((await conn.execute(query)).scalar_one())
    except Exception:  # the sink creates the table on its first start
        return 0
    finally:
        await engine.dispose()


async def wait_for(what: str, check: Any, timeout_s: float, services: ServiceGroup) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        services.check_alive()
        value = await check()
        if value:
            return value
        await asyncio.sleep(1.0)
    raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")


async def run_demo(
    settings: Settings,
    min_candles: int,
    predictions: int,
    timeout_s: float,
    venues: tuple[str, ...] = ("kraken", "coinbase"),
) -> dict[str, Any]:
    from rich.console import Console

    from cryptopredict import stack
    from cryptopredict.orchestration import start_training, training_request
    from cryptopredict.simulators import replay_exchange
    from grpc_server.client import stream_predictions

    if "kraken" not in venues or not set(venues) <= set(topics.EXCHANGES):
        raise ValueError(f"the demo reads Kraken and any of {list(topics.EXCHANGES)}, not {list(venues)}")

    console = Console(stderr=True, soft_wrap=True)
    started = datetime.now(UTC)
    with console.status("starting the local stack (first run installs Kafka, tools and models)..."):
        stack.up(settings)

    grpc_port = free_port()
    exchange_ports = {venue: free_port() for venue in venues}
    run_settings = settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update={"topic_prefix": f"{started:%Y%m%d%H%M%S}-"}),
            "grpc": settings.grpc.model_copy(update={"port": grpc_port}),
            "venues": list(venues),
            **{v: settings.venue(v).model_copy(update={"pairs": [VENUE_PAIRS[v]]}) for v in venues},
        }
    ).in_namespace(NAMESPACE)
    prefix = run_settings.kafka.topic_prefix
    pair = topics.namespaced_pair(VENUE_PAIR, NAMESPACE)
    env = dict(os.environ)
    env |= {
        "CRYPTOPREDICT_NAMESPACE": NAMESPACE,
        "CRYPTOPREDICT_KAFKA__TOPIC_PREFIX": prefix,
        "CRYPTOPREDICT_GRPC__PORT": str(grpc_port),
        "CRYPTOPREDICT_VENUES": json.dumps(list(venues)),
        **{f"CRYPTOPREDICT_{v.upper()}__PAIRS": json.dumps([VENUE_PAIRS[v]]) for v in venues},
    }
    cli = [sys.executable, "-m", "cryptopredict.cli"]
    services = ServiceGroup(settings.local_dir.resolve() / "logs" / "demo", env)
    try:
        await services.start("stream", sys.executable, "-m", "streams", "worker", "-l", "warn")
        # Retrains of the demo start below; its worker makes no schedules.
        await services.start("worker", *cli, "worker", "--queues", "training", "--no-schedules")
        await services.start("grpc", sys.executable, "-m", "grpc_server")
        for venue, port in exchange_ports.items():
            # 300x: one 1-minute candle every 0.2 s, long enough to outlast training. Every venue
            # replays the same seeded market, through its own protocol.
            await services.start(
                f"exchange-{venue}",
                *cli,
                "exchange",
                "--venue",
                venue,
                "--port",
                str(port),
                "--pair",
                VENUE_PAIRS[venue],
                "--minutes",
                "3000",
                "--speed",
                "300",
            )
            replay = replay_exchange(venue)([], port=port)
            await services.start(
                f"feed-{venue}",
                *cli,
                "feed",
                "--venue",
                venue,
                "--url",
                replay.url,
                "--rest-url",
                replay.rest_url,
            )

        markets = [
            topics.market_key(venue, topics.namespaced_pair(VENUE_PAIRS[venue], NAMESPACE))
            for venue in venues
        ]
        with console.status(f"replaying trades until {min_candles} candles are in the feature store..."):
            for market in markets:
                await wait_for(
                    f"{min_candles} candles of {market} in the store",
                    lambda market=market: _at_least(
                        candle_rows_since(settings, market, started), min_candles
                    ),
                    timeout_s,
                    services,
                )
        with console.status("training through Temporal (persistence vs XGBoost, MLflow registry)..."):
            # A demo-sized retrain: the real steps, with budgets that fit a few hundred candles.
            request = training_request(
                run_settings,
                pair,
                settings.features.interval_s,
                settings.model.horizons_candles[0],
                reason="demo",
                min_rows=80,
                folds=2,
                trials=3,
                screen_time_limit_s=10.0,
            )
            result = await start_training(run_settings, request)
        assert result is not None
        console.print(f"[bold]{json.dumps(result.decision_line())}[/bold]")
        with console.status(f"streaming {predictions} predictions over gRPC..."):
            streamed = await stream_predictions(
                f"127.0.0.1:{grpc_port}", [pair], settings.features.interval_s, predictions, timeout_s
            )
        for p in streamed[-5:]:
            console.print(
                f"{p.pair} {p.feature_time:%Y-%m-%d %H:%M} last {p.last_price:.1f} -> "
                f"{p.predicted_price:.1f} at {p.target_time:%H:%M} ({p.model_name} v{p.model_version})"
            )
        candles = await topic_message_count(run_settings.kafka, topics.topic_name(topics.CANDLES, prefix))
    finally:
        await services.stop()
    # Counted once the feed has stopped: reading a topic that is still being written never ends.
    trade_records = await read_topic(run_settings.kafka, topics.topic_name(topics.TRADES, prefix))
    trades_by_venue = dict.fromkeys(venues, 0)
    for value in trade_records:
        batch = TradeBatch.model_validate_json(value)
        trades_by_venue[batch.exchange] += len(batch.trades)

    host = settings.temporal.host_port[0]
    workflow_id = topics.training_workflow_id(
        pair, settings.features.interval_s, settings.model.horizons_candles[0]
    )
    return {
        "trades": sum(trades_by_venue.values()),
        "trades_by_venue": trades_by_venue,
        "candles": candles,
        "model_version": f"{result.champion.name}/{result.champion.version} ({result.champion.flavor})",
        "predictions_streamed": len(streamed),
        "temporal_ui": f"http://{host}:{settings.temporal.ui_port}/namespaces/{settings.temporal.namespace}"
        f"/workflows/{workflow_id}",
        "mlflow_ui": settings.mlflow.tracking_uri,
    }


async def _at_least(count: Any, minimum: int) -> bool:
    return int(await count) >= minimum
