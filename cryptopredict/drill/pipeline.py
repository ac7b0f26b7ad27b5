"""One drill's live pipeline, isolated from anything else on the stack: the replay exchange with seeded
trades of its own pairs, the feed, stream worker(s) (candles, indicators, the store sink, the prediction
agent), the gRPC server, the stream edge and subscribers, all on its own topic prefix."""

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
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from cryptopredict.drill.harness import NAMESPACE, DrillFailure, Run
from cryptopredict.kafka_admin import delete_topics, read_topic, topic_names
from cryptopredict.kraken.sources import synthetic_market
from cryptopredict.models import Prediction, Trade
from cryptopredict.settings import Settings
from cryptopredict.simulators.exchange import ReplayExchange
from cryptopredict.topics import (
    CANDLES,
    namespace_topic_prefix,
    namespaced_pair,
    registered_model_name,
    topic_name,
)

logger = logging.getLogger(__name__)

START = datetime(2026, 10, 1, tzinfo=UTC)
INTERVALS_S = (60, 300)
HORIZON_CANDLES = 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def drill_pairs(count: int, tag: str | None = None) -> list[str]:
    """Pairs no live target trades: in the drill namespace, with a random tag in each name. The replay
    exchange trades them under these names, so the feed needs no namespace of its own."""
    tag = tag or uuid.uuid4().hex[:4].upper()
    return [namespaced_pair(f"D{chr(ord('A') + n)}{tag}/USD", NAMESPACE) for n in range(count)]


@dataclass(frozen=True)
class Replay:
    """The seeded replay of one drill: `minutes` of trades of `pairs`, `speed` times faster than real."""

    pairs: tuple[str, ...]
    minutes: int
    speed: float
    seed: int

    def trades(self) -> list[Trade]:
        return synthetic_market(list(self.pairs), START, self.minutes, seed=self.seed)

    @property
    def wall_s(self) -> float:
        return self.minutes * 60 / self.speed


@dataclass
class Subscriber:
    """One StreamPredictions subscriber through the edge: what it received, and the UNAVAILABLE errors it
    got (after each it subscribes again)."""

    received: list[Prediction] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() of each received prediction
    unavailable: int = 0
    other_errors: list[str] = field(default_factory=list)
    # What came first on each (re)subscription: the latest prediction of each key, as the server knew it.
    snapshots: int = 0

    def latest(self) -> dict[tuple[str, int, int], Prediction]:
        latest: dict[tuple[str, int, int], Prediction] = {}
        for p in self.received:
            key = (p.pair, p.interval_s, p.horizon_s)
            if key not in latest or p.feature_time >= latest[key].feature_time:
                latest[key] = p
        return latest


class Pipeline:
    """Starts and stops the processes of one drill; the fault under test acts on them or on the stack."""

    def __init__(self, settings: Settings, name: str, replay: Replay, log_dir: Path) -> None:
        self.settings = settings
        self.replay = replay
        self.trades = replay.trades()
        self.pairs = list(replay.pairs)
        self.prefix = f"{namespace_topic_prefix(NAMESPACE)}{name}-{uuid.uuid4().hex[:8]}-"
        self.log_dir = log_dir
        self.grpc_port, self.edge_port = free_port(), free_port()
        self.env = {
            "CRYPTOPREDICT_KRAKEN__PAIRS": json.dumps(self.pairs),
            "CRYPTOPREDICT_FEATURES__CANDLE_INTERVALS_S": json.dumps(list(INTERVALS_S)),
            "CRYPTOPREDICT_MODEL__HORIZONS_CANDLES": json.dumps([HORIZON_CANDLES]),
            "CRYPTOPREDICT_GRPC__PORT": str(self.grpc_port),
            "CRYPTOPREDICT_GRPC__EDGE_PORT": str(self.edge_port),
            # A drill's processes run beside the stack's own: no metrics ports to fight over.
            "CRYPTOPREDICT_METRICS__STREAM_PORT": "-1",
            "CRYPTOPREDICT_METRICS__GRPC_PORT": "-1",
            "CRYPTOPREDICT_METRICS__EDGE_PORT": "-1",
        }
        self.run = Run(settings, log_dir, self.prefix, env=self.env)
        self.run_settings = settings.model_copy(
            update={
                "kafka": settings.kafka.model_copy(update={"topic_prefix": self.prefix}),
                "kraken": settings.kraken.model_copy(update={"pairs": self.pairs}),
                "grpc": settings.grpc.model_copy(
                    update={"port": self.grpc_port, "edge_port": self.edge_port}
                ),
                "metrics": settings.metrics.model_copy(update={"edge_port": -1}),
            }
        )
        self.exchange = ReplayExchange(self.trades, speed=replay.speed, host="127.0.0.1", port=free_port())
        self.feed: asyncio.Task[Any] | None = None
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.subscribers: list[Subscriber] = []
        self._subscriber_tasks: list[asyncio.Task[None]] = []
        self._channels: list[grpc.aio.Channel] = []

    # --- setup -----------------------------------------------------------------------------------
    def model_names(self) -> list[str]:
        return [registered_model_name(pair, INTERVALS_S[0], HORIZON_CANDLES) for pair in self.pairs]

    def ensure_champions(self) -> None:
        """A persistence champion per pair, as a first retrain registers (blocking: MLflow's client)."""
        import mlflow

        from cryptopredict.ml import pyfunc, registry

        mlflow.set_tracking_uri(self.settings.mlflow.tracking_uri)
        mlflow.set_experiment("cryptopredict-drill")
        client = mlflow.MlflowClient()
        for name in self.model_names():
            registry.ensure_persistence_champion(
                client,
                name,
                lambda: pyfunc.log_persistence("persistence-drill", INTERVALS_S[0], HORIZON_CANDLES),
            )

    def promote_new_champions(self) -> list[Any]:
        """A new persistence version of each pair's model, promoted to champion (as a retrain that found a
        better model does); returns the model events that tell the prediction path."""
        import mlflow

        from cryptopredict.ml import pyfunc, registry
        from cryptopredict.models import ModelEvent

        client = mlflow.MlflowClient(self.settings.mlflow.tracking_uri)
        events = []
        for pair, name in zip(self.pairs, self.model_names(), strict=True):
            previous = registry.current_champion(client, name)
            model_uri, run_id = pyfunc.log_persistence(
                "persistence-drill-reload", INTERVALS_S[0], HORIZON_CANDLES
            )
            version = registry.register_version(
                client, model_uri, name, run_id, {registry.KIND_TAG: "persistence"}
            )
            registry.promote(client, name, str(version.version), "drill: a model reload")
            champion = client.get_model_version(name, str(version.version))
            events.append(
                ModelEvent(
                    registered_model=name,
                    pair=pair,
                    interval_s=INTERVALS_S[0],
                    horizon_candles=HORIZON_CANDLES,
                    champion=registry.model_ref(champion, registry.CHAMPION),
                    previous_version=None if previous is None else str(previous.version),
                    kind="promoted",
                    reason="drill: a model reload",
                    at=datetime.now(UTC),
                )
            )
        return events

    async def publish_model_events(self, events: Sequence[Any]) -> None:
        from cryptopredict.model_events import publish_model_event

        for event in events:
            await publish_model_event(self.run_settings, event)

    async def start(self, subscribers: int) -> None:
        await self.run.__aenter__()
        self.run.start_worker()
        await self.start_grpc()
        await self._start_edge()
        await self._wait_serving(f"127.0.0.1:{self.edge_port}", 60)
        await self.add_subscribers(subscribers)

    async def start_grpc(self) -> None:
        await self._start_process("grpc", sys.executable, "-m", "grpc_server")

    async def stop_process(self, name: str) -> None:
        """A clean stop (SIGTERM), as a rolling restart does."""
        process = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    async def _start_process(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        log = (self.log_dir / f"{name}.log").open("ab")
        self.processes[name] = await asyncio.create_subprocess_exec(
            *args,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            env=env or self.run.env,
            start_new_session=True,
        )
        log.close()

    async def _start_edge(self) -> None:
        from cryptopredict.stack.tools import edge_binary
        from grpc_server.edge import edge_command

        binary = await asyncio.to_thread(edge_binary, self.settings)
        args, env = edge_command(self.run_settings, binary)
        await self._start_process("edge", *args, env=env)

    async def _wait_serving(self, target: str, timeout_s: float) -> None:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout_s
        async with grpc.aio.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                try:
                    response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    if response.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                if time.monotonic() > deadline:
                    raise DrillFailure(f"{target} not serving within {timeout_s:.0f} s")
                await asyncio.sleep(0.3)

    async def add_subscribers(self, count: int, per_channel: int = 50) -> None:
        for n in range(count):
            if n % per_channel == 0:
                self._channels.append(grpc.aio.insecure_channel(f"127.0.0.1:{self.edge_port}"))
            subscriber = Subscriber()
            self.subscribers.append(subscriber)
            self._subscriber_tasks.append(
                asyncio.create_task(self._subscribe(self._channels[-1], subscriber))
            )

    async def _subscribe(self, channel: grpc.aio.Channel, subscriber: Subscriber) -> None:
        from grpc_server.convert import prediction_from_proto
        from grpc_server.pb import predictions_pb2 as pb
        from grpc_server.pb import predictions_pb2_grpc as pb_grpc

        stub = pb_grpc.PredictionServiceStub(channel)  # type: ignore[no-untyped-call]
        while True:
            call = stub.StreamPredictions(
                pb.StreamPredictionsRequest(pairs=self.pairs, interval_s=INTERVALS_S[0])
            )
            subscriber.snapshots += 1
            try:
                async for response in call:
                    subscriber.received.append(prediction_from_proto(response.prediction))
                    subscriber.arrivals.append(time.monotonic())
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    subscriber.unavailable += 1
                else:
                    subscriber.other_errors.append(f"{exc.code().name}: {exc.details()}")
            await asyncio.sleep(0.5)  # then subscribes again, as a client retrying UNAVAILABLE does

    async def start_replay(self) -> None:
        """The exchange, and the feed that subscribes to it (the replay clock starts then)."""
        from streams.trade_feed import run_feed

        await self.exchange.start()
        self.feed = asyncio.create_task(
            run_feed(self.run_settings, self.exchange.url, rest_url=self.exchange.rest_url)
        )

    # --- progress --------------------------------------------------------------------------------
    def replay_now(self) -> datetime | None:
        """The replay clock: event time of trades that have happened by now."""
        return self.exchange.clock.now()

    def replay_fraction(self) -> float:
        now = self.replay_now()
        if now is None:
            return 0.0
        first, last = self.trades[0].timestamp, self.trades[-1].timestamp
        return min(1.0, max(0.0, (now - first) / (last - first)))

    async def wait_replay_fraction(self, fraction: float, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.replay_fraction() < fraction:
            if self.feed is not None and self.feed.done():
                self.feed.result()  # the feed's own error, raised here
                raise DrillFailure("the feed ended before the replay did")
            if time.monotonic() > deadline:
                raise DrillFailure(f"replay not {fraction:.0%} through within {timeout_s:.0f} s")
            await asyncio.sleep(0.2)

    async def wait_until_working(self, timeout_s: float = 120) -> None:
        await self.run.wait_until_working(timeout_s)

    def trades_until(self, until: datetime) -> list[Trade]:
        return [t for t in self.trades if t.timestamp <= until]

    @property
    def arrivals(self) -> list[float]:
        return self.subscribers[0].arrivals if self.subscribers else []

    # --- teardown --------------------------------------------------------------------------------
    async def stop(self, delete: bool = True) -> None:
        for task in self._subscriber_tasks:
            task.cancel()
        await asyncio.gather(*self._subscriber_tasks, return_exceptions=True)
        for channel in self._channels:
            await channel.close()
        if self.feed is not None:
            self.feed.cancel()
            with contextlib.suppress(BaseException):
                await self.feed
        await self.exchange.stop()
        for process in self.processes.values():
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        await self.run.__aexit__(None, None, None)
        if delete:
            await self.delete_topics()

    async def delete_topics(self) -> None:
        names = [t for t in await topic_names(self.settings.kafka) if t.startswith(self.prefix)]
        await delete_topics(self.settings.kafka, sorted(names))

    async def candles_seen(self) -> int:
        return len(await read_topic(self.run.kafka, topic_name(CANDLES, self.prefix), idle_s=1))


def replay_for(pairs: Sequence[str], outage_s: float, seed: int, minutes: int = 15) -> Replay:
    """A replay long enough that the fault lands in its middle: a third before it, the outage, and as
    long again after."""
    wall_s = max(30.0, 2.5 * outage_s + 15)
    return Replay(tuple(pairs), minutes, minutes * 60 / wall_s, seed)
