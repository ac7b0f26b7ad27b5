"""gRPC serving latency: GetLatestPrediction, StreamPredictions fan-out, and candle close to client.

The server is `python -m grpc_server` in its own process, on a free port, consuming its own topic prefix
on the local broker (the real path: topic `predictions` -> PredictionConsumer -> hub -> RPCs). Clients
are separate processes on the same machine (2 cores, shared by server, clients, broker and the rest of
the stack), so every figure includes the client's own gRPC stack and any CPU contention; the CPU each
side used, and what the rest of the machine used, are reported beside the latencies. The headline
unary and fan-out figures are measured through the stream edge (`cryptopredict edge`, infra/stream-edge,
Go) in front of that server; the same loads straight to the Python server are reported beside them.

1. GetLatestPrediction, after seeding one prediction for each of 10 pairs through Kafka:
   - sequential: one client, one call at a time;
   - closed loop: 100 clients (a channel, i.e. an HTTP/2 connection, each) calling back to back: 100
     calls always in flight. This is the capacity (req/s); its latency is mostly queueing;
   - open loop: the same 100 clients, each calling at Poisson times (together a fixed offered load),
     never waiting for an earlier answer. Latency = call start -> answer in the client;
   - 1,000 req/s from `unary-load` (a Go load generator, infra/go-bench, built into .local/bin), 100
     connections, to the server and then to the edge (the headline `unary_p50_ms` / `unary_p99_ms`):
     a Python client costs as much CPU per call as the server, on the same 2 cores, and ghz (a general
     Go one) nearly twice the edge's, with collection pauses of its own.
2. StreamPredictions fan-out: N subscribers (1,000 for the headline, 50 streams to a connection, in
   one Go process built from infra/go-bench: Python subscribers spent more CPU receiving than the
   server spent sending, on the same 2 cores) stream one pair, from the server and then from the edge
   (the headline `fanout_p99_ms`); then predictions of that pair are produced to Kafka at 2 a second.
   Publication = the producer's wall clock just before `send` (stamped into made_at); latency = the
   client's wall clock when the message comes out of the stream - made_at. Every subscriber must receive
   every prediction (delivered / expected is reported).
3. Candle close to client: a Faust worker (`python -m streams worker`, every agent) with a linear
   champion (reading every standard feature) in MLflow for 3 pairs; each step publishes one trade per
   pair that closes its 1-minute candle (event time), the prediction agent predicts on it, the stream
   edge (and, beside it, the Python server) streams the prediction to a client. Candle close = the
   Kafka timestamp of the candle message (the candle builder's send of the closed window); latency =
   client receipt - that. Split at made_at (worker / serving), and the closing trade's produce ->
   client beside it.
4. The floor: a bare grpc.aio server (same methods, fixed pre-serialized responses, no Kafka and no
   application code) under the same unary loads and the 1,000-subscriber fan-out: what Python gRPC
   itself costs on this machine.

Every latency is the median of 3 runs (`--runs`), each a fresh process with its own services, with the
range over the runs beside it.

Usage: .venv/bin/python bench/grpc.py [--quick] [--runs N] [--phases unary,fanout,candle,floor] [--server-root DIR]
(needs `cryptopredict stack up`). Only a run of every phase with this checkout's server writes its
section of docs/benchmarks.md; --server-root runs the server and the stream worker of another checkout
(to measure a patch).
Ends with one JSON line: {"unary_p50_ms": ..., "unary_p99_ms": ..., "subscribers": N, "fanout_p99_ms": ...,
"candle_to_client_p99_ms": ...}, the medians, with each run's values beside them (`unary_p50_ms_runs`, ...).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Run as `python bench/grpc.py`, this file's directory comes first on sys.path, and this very file
# would shadow the grpc package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import functools  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import AsyncIterator, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from typing import Any  # noqa: E402

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402

from bench.report import RUN_OUTPUT, RUNS, Spread, across_runs, median_figures, publish, repeat_runs  # noqa: E402
from cryptopredict.cli.demo import free_port  # noqa: E402
from cryptopredict.models import Prediction  # noqa: E402
from grpc_server.pb import predictions_pb2 as pb  # noqa: E402
from grpc_server.pb import predictions_pb2_grpc as pb_grpc  # noqa: E402

UPSTREAM = {"p50": 1.2, "p95": 3.4, "p99": 8.1}  # the upstream's claimed REST figures, ms
TARGETS = {"unary_p50_ms": 0.5, "unary_p99_ms": 1.5, "fanout_p99_ms": 15.0, "candle_to_client_p99_ms": 30.0}
UNARY_PAIRS = [f"UNARY{i}/USD" for i in range(10)]
FANOUT_PAIR = "FANOUT/USD"
CANDLE_PAIRS = ["LINA/USD", "LINB/USD", "LINC/USD"]
INTERVAL_S = 60
HORIZON_S = 60
CLIENTS = 100
HEADLINE_RATE = 1000.0  # req/s offered by the 100 clients together in the headline open-loop run
PHASES = ("unary", "fanout", "candle", "floor")
SUBSCRIBERS = 1000  # the headline fan-out
FANOUT_PACE = 2.0  # predictions/s in the fan-out runs (each one goes to every subscriber)
CANDLE_PACE = 2.0  # steps/s in the candle run: each closes one 1-minute candle per pair
FLOOR_BASE = 100  # minutes of the floor server's predictions
LOAD_PROCESSES = 2
STREAMS_PER_CHANNEL = 50
T0 = datetime(2025, 7, 1, tzinfo=UTC)
SERVICE = "cryptopredict.v1.PredictionService"
STREAM_METHOD = f"/{SERVICE}/StreamPredictions"
DRAIN_S = 3.0  # after the last publication, time for the last deliveries before the streams stop
SETTLE_STEPS = 10  # candle phase: steps at the measured pace after the warm-up, not measured


# ---------------------------------------------------------------- pure helpers


def summary(latencies_ms: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / p99 / max of a latency sample (ms); NaN for an empty sample."""
    if len(latencies_ms) == 0:
        return {"n": 0, "p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "max": float("nan")}
    values = np.asarray(latencies_ms, dtype=float)
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "n": len(values),
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "max": float(values.max()),
    }


def poisson_schedule(rate_per_s: float, duration_s: float, rng: random.Random) -> list[float]:
    """Send times (s from the start) of a Poisson process of `rate_per_s` over `duration_s`."""
    times: list[float] = []
    at = rng.expovariate(rate_per_s)
    while at < duration_s:
        times.append(at)
        at += rng.expovariate(rate_per_s)
    return times


def split(total: int, parts: int) -> list[int]:
    """`total` spread over `parts` as evenly as possible, larger shares first."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def make_prediction(pair: str, minute: int, made_at: datetime, version: str = "1") -> Prediction:
    feature_time = T0 + timedelta(minutes=minute)
    return Prediction(
        pair=pair,
        interval_s=INTERVAL_S,
        horizon_s=HORIZON_S,
        made_at=made_at,
        feature_time=feature_time,
        target_time=feature_time + timedelta(seconds=INTERVAL_S + HORIZON_S),
        last_price=100.0,
        predicted_price=100.5,
        lower_price=99.0,
        upper_price=102.0,
        model_name="cryptopredict-bench",
        model_version=version,
    )


def offered(result: dict[str, Any]) -> str:
    return f"{result['offered']:,.0f}" if result["offered"] else "-"


def lag(result: dict[str, Any]) -> str:
    """How late the open loop's sends left against their schedule (p99, ms): the load generator's own lag."""
    return fmt(result["lag"]["p99"]) if result["mode"] in ("open", GO_MODE) else "-"


def fmt(value: float | Spread) -> str:
    """A latency: over repeated runs, the median with the range of the runs beside it."""
    if isinstance(value, Spread):
        return value.with_range(2)
    return "n/a" if value != value else f"{value:,.2f}"  # NaN check


# ---------------------------------------------------------------- processes


def pause_gc() -> None:
    """In a client process, for the measurement: its own collection pauses (100 ms and more on this
    machine) would otherwise count as the server's latency. Memory grows for the length of one run only."""
    gc.collect()
    gc.freeze()
    gc.disable()


def others(cpu: dict[str, float], clients_s: float) -> float:
    """Cores busy with anything but the server and the clients over a measurement (the broker, the rest
    of the stack, other work on the machine)."""
    return max(
        0.0, cpu["machine_busy"] * (os.cpu_count() or 1) - (cpu["server_s"] + clients_s) / cpu["wall_s"]
    )


class CpuMeter:
    """CPU seconds used by the serving processes (all their threads: the server, and the edge in front
    of it when there is one) and the share of the machine busy, since start."""

    def __init__(self, *pids: int) -> None:
        self.processes = [psutil.Process(pid) for pid in pids]
        self.wall = time.perf_counter()
        self.server = self._process_s()
        self.machine = psutil.cpu_times()

    def _process_s(self) -> float:
        return sum(times.user + times.system for times in (p.cpu_times() for p in self.processes))

    def read(self) -> dict[str, float]:
        machine = psutil.cpu_times()
        busy = lambda t: t.user + t.nice + t.system + t.irq + t.softirq + t.steal  # noqa: E731
        total = sum(machine) - sum(self.machine)
        return {
            "wall_s": time.perf_counter() - self.wall,
            "server_s": self._process_s() - self.server,
            "machine_busy": (busy(machine) - busy(self.machine)) / total if total else float("nan"),
        }


@dataclass
class Services:
    """The server and the stream worker as child processes, logging under .local/logs/, run from the
    checkout `root` (this one, or a patched copy to compare: its packages come first on the path)."""

    env: dict[str, str]
    log_dir: Path
    root: Path = ROOT
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(
        self, name: str, *args: str, extra_env: dict[str, str] | None = None, program: str = sys.executable
    ) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = self.env | {"PYTHONPATH": f"{self.root}{os.pathsep}{ROOT}"} | (extra_env or {})
        with (self.log_dir / f"bench-grpc-{name}.log").open("wb") as log:
            self.processes[name] = subprocess.Popen(
                [program, *args], cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def check(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {process.returncode}; see {self.log_dir}/bench-grpc-{name}.log"
                )

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(40)  # the stream supervisor kills its worker after its own grace period
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def wait_serving(target: str, services: Services, timeout_s: float = 60) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            services.check()
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"server at {target} not serving after {timeout_s} s")
            await asyncio.sleep(0.2)


# ---------------------------------------------------------------- unary load generators (child processes)


def unary_load(
    target: str, clients: int, mode: str, rate_per_s: float, duration_s: float, start_at: float, seed: int
) -> dict[str, Any]:
    """Runs in a load-generator process: `clients` channels issuing GetLatestPrediction.

    mode "sequential" / "closed": each client sends its next request when the previous answer is in;
    "open": each client sends at Poisson times of `rate_per_s`, without waiting for earlier answers.
    Returns the latencies (ms, call start -> answer) and how late the open-loop sends started."""
    return asyncio.run(_unary_load(target, clients, mode, rate_per_s, duration_s, start_at, seed))


async def _unary_load(
    target: str, clients: int, mode: str, rate_per_s: float, duration_s: float, start_at: float, seed: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    channels = [grpc.aio.insecure_channel(target) for _ in range(clients)]
    stubs = [pb_grpc.PredictionServiceStub(channel) for channel in channels]
    requests = [
        pb.GetLatestPredictionRequest(pair=p, interval_s=INTERVAL_S, horizon_s=HORIZON_S) for p in UNARY_PAIRS
    ]
    for stub in stubs:  # connect and warm every channel
        for _ in range(3):
            await stub.GetLatestPrediction(rng.choice(requests), timeout=10)
    latencies: list[float] = []
    lags: list[float] = []
    errors = 0
    pause_gc()
    await asyncio.sleep(max(0.0, start_at - time.time()))
    started = time.perf_counter()
    cpu_started = time.process_time()
    end = started + duration_s

    async def call(stub: pb_grpc.PredictionServiceStub, request: pb.GetLatestPredictionRequest) -> None:
        nonlocal errors
        t0 = time.perf_counter()
        try:
            await stub.GetLatestPrediction(request, timeout=10)
        except grpc.aio.AioRpcError:
            errors += 1
            return
        latencies.append((time.perf_counter() - t0) * 1000)

    async def closed(stub: pb_grpc.PredictionServiceStub, client_rng: random.Random) -> None:
        while time.perf_counter() < end:
            await call(stub, client_rng.choice(requests))

    async def open_loop() -> list[tuple[Any, float, list[float]]]:
        # Every client's Poisson times, merged: one dispatcher starts each call when it is due and a
        # done-callback takes its time, so a call never waits for another and no task per call is needed.
        events = sorted(
            (at, i)
            for i in range(clients)
            for at in poisson_schedule(rate_per_s, duration_s, random.Random(rng.random()))
        )
        pending = len(events)
        finished = asyncio.Event()
        calls: list[tuple[Any, float, list[float]]] = []

        def done(ended: list[float], _: Any) -> None:
            nonlocal pending
            ended.append(time.perf_counter())
            pending -= 1
            if not pending:
                finished.set()

        for at, i in events:
            delay = started + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            t0 = time.perf_counter()
            lags.append((t0 - started - at) * 1000)
            call = stubs[i].GetLatestPrediction(rng.choice(requests), timeout=10)
            ended: list[float] = []
            call.add_done_callback(functools.partial(done, ended))
            calls.append((call, t0, ended))
        await finished.wait()
        return calls

    if mode == "open":
        calls = await open_loop()
    else:
        calls = []
        await asyncio.gather(*(closed(stub, random.Random(rng.random())) for stub in stubs))
    elapsed = time.perf_counter() - started
    cpu_s = time.process_time() - cpu_started
    gc.enable()
    for pending, t0, ended in calls:  # the open loop's outcomes, read after the measurement
        if await pending.code() == grpc.StatusCode.OK:
            latencies.append((ended[0] - t0) * 1000)
        else:
            errors += 1
    for channel in channels:
        await channel.close()
    return {"latencies": latencies, "lags": lags, "errors": errors, "elapsed": elapsed, "cpu_s": cpu_s}


def run_unary(
    ctx: Any,
    target: str,
    server_pid: int,
    clients: int,
    processes: int,
    mode: str,
    total_rate: float,
    duration_s: float,
) -> dict[str, Any]:
    shares = [n for n in split(clients, processes) if n]
    start_at = time.time() + 3 + 0.05 * clients  # all channels connected and warm by then
    per_client = total_rate / clients if total_rate else 0.0
    with ctx.Pool(len(shares)) as pool:
        pending = pool.starmap_async(
            unary_load,
            [(target, n, mode, per_client, duration_s, start_at, 1000 + i) for i, n in enumerate(shares)],
        )
        time.sleep(max(0.0, start_at - time.time()))
        meter = CpuMeter(server_pid)
        time.sleep(duration_s)
        cpu = meter.read()
        results = pending.get()
    latencies = [v for r in results for v in r["latencies"]]
    lags = [v for r in results for v in r["lags"]]
    elapsed = max(r["elapsed"] for r in results)
    throughput = len(latencies) / elapsed
    return {
        "mode": mode,
        "clients": clients,
        "offered": total_rate,
        "throughput": throughput,
        "errors": sum(r["errors"] for r in results),
        "lat": summary(latencies),
        "lag": summary(lags),
        # CPU per request (us): the server's over the measured window, the load generators' own.
        "server_us": cpu["server_s"] / max(throughput * cpu["wall_s"], 1) * 1e6,
        "client_us": sum(r["cpu_s"] for r in results) / max(len(latencies), 1) * 1e6,
        "machine_busy": cpu["machine_busy"],
        "others": others(cpu, sum(r["cpu_s"] for r in results)),
    }


GO_MODE = "open (Go)"  # the headline unary load: unary-load, a Go load generator
WARMUP_CALLS = 300  # first calls left out: the connections are still being set up


def go_unary_load(
    binary: Path, target: str, serving_pids: list[int], rate: float, duration_s: float
) -> dict[str, Any]:
    """GetLatestPrediction from `unary-load` (infra/go-bench): `CLIENTS` connections, a call due every
    1/`rate` s in turn on each, in a goroutine of its own (open loop); latency from when the call was
    due, so a late start counts against it."""
    request = pb.GetLatestPredictionRequest(pair=UNARY_PAIRS[0], interval_s=INTERVAL_S, horizon_s=HORIZON_S)
    command = [
        str(binary),
        "-target", target,
        "-request", request.SerializeToString().hex(),
        "-connections", str(CLIENTS),
        "-rate", f"{rate:.0f}",
        "-calls", str(round(rate * duration_s)),
        "-warmup", str(WARMUP_CALLS),
    ]  # fmt: skip
    meter = CpuMeter(*serving_pids)
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    cpu = meter.read()
    report = json.loads(completed.stdout)
    calls = len(report["latencies_ns"])
    errors = sum(report["errors"].values())
    latencies = [ns / 1e6 for ns in report["latencies_ns"]]
    return {
        "mode": GO_MODE,
        "clients": CLIENTS,
        "offered": rate,
        "throughput": (calls - errors) / report["wall_s"],
        "errors": errors,
        "error_kinds": sorted(report["errors"]),
        "lat": summary(latencies),
        "lag": summary([ns / 1e6 for ns in report["lags_ns"]]),
        "server_us": cpu["server_s"] / (calls + WARMUP_CALLS) * 1e6,
        "client_us": report["cpu_s"] / max(calls, 1) * 1e6,
        "machine_busy": cpu["machine_busy"],
        "others": others(cpu, report["cpu_s"]),
    }


# ---------------------------------------------------------------- stream subscribers (child processes)


@dataclass
class Subscribers:
    """StreamPredictions subscribers in a Go process (infra/go-bench/cmd/stream-subscribers),
    STREAMS_PER_CHANNEL streams to a connection. A Python subscriber spends more CPU receiving a message
    than the server spends sending it, on the same 2 cores: it would measure itself more than the server.

    The process reports "ready" once every stream has had its first message (so it is subscribed); it
    keeps each message raw with the wall time it arrived, and prints them when its stdin closes."""

    process: asyncio.subprocess.Process
    count: int
    ready_line: asyncio.Task[bytes]
    cpu_s: float = 0.0

    @classmethod
    async def start(cls, binary: Path, target: str, count: int, pairs: list[str]) -> Subscribers:
        request = pb.StreamPredictionsRequest(pairs=pairs, interval_s=INTERVAL_S).SerializeToString()
        process = await asyncio.create_subprocess_exec(
            str(binary),
            f"-target={target}",
            f"-method={STREAM_METHOD}",
            f"-request={request.hex()}",
            f"-streams={count}",
            f"-per-conn={STREAMS_PER_CHANNEL}",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=2**20,
        )
        assert process.stdout is not None
        return cls(process, count, asyncio.create_task(process.stdout.readline()))

    def poll_ready(self) -> bool:
        """Whether every stream has had its first message; raises when the process ended first."""
        if self.ready_line.done():
            if self.ready_line.result() != b"ready\n":
                raise RuntimeError(f"the subscribers ended before all {self.count} streams were ready")
            return True
        if self.process.returncode is not None:
            raise RuntimeError("the subscriber process died")
        return False

    async def ready(self, timeout_s: float = 180) -> None:
        await asyncio.wait_for(asyncio.shield(self.ready_line), timeout_s)
        self.poll_ready()

    async def results(self, timeout_s: float = 120) -> list[tuple[int, str, int, float, float]]:
        """Stops the streams; a record per message: (stream, pair, minute, receive time s, made_at s).
        The process's CPU from ready to stop goes to `cpu_s`."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        out, _ = await asyncio.wait_for(self.process.communicate(), timeout_s)
        lines = out.decode().splitlines()
        if self.process.returncode != 0 or not lines or lines[-1] != "end":
            raise RuntimeError(f"the subscriber process failed (exit {self.process.returncode})")
        self.cpu_s = float(lines[0].removeprefix("cpu "))
        t0 = T0.timestamp()
        records = []
        for line in lines[1:-1]:
            stream, received_ns, message = line.split()
            p = pb.StreamPredictionsResponse.FromString(bytes.fromhex(message)).prediction
            minute = int((p.feature_time.seconds - t0) // 60)
            made_at = p.made_at.seconds + p.made_at.nanos / 1e9
            records.append((int(stream), p.pair, minute, int(received_ns) / 1e9, made_at))
        return records


# ---------------------------------------------------------------- phases


async def produce_predictions(producer: Any, topic: str, predictions: list[Prediction]) -> None:
    for prediction in predictions:
        await producer.send_and_wait(topic, prediction.to_json_bytes(), key=prediction.pair.encode())


async def seed_unary(producer: Any, topic: str, target: str) -> None:
    now = datetime.now(UTC)
    await produce_predictions(producer, topic, [make_prediction(pair, 0, now) for pair in UNARY_PAIRS])
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.PredictionServiceStub(channel)
        deadline = time.monotonic() + 60
        for pair in UNARY_PAIRS:
            while True:
                try:
                    await stub.GetLatestPrediction(
                        pb.GetLatestPredictionRequest(pair=pair, interval_s=INTERVAL_S, horizon_s=HORIZON_S)
                    )
                    break
                except grpc.aio.AioRpcError as exc:
                    if exc.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)


async def run_fanout(
    subscriber_binary: Path,
    producer: Any,
    topic: str,
    target: str,
    serving_pids: list[int],
    count: int,
    predictions: int,
    pace_per_s: float,
    base: int,
) -> dict[str, Any]:
    """`count` subscribers to FANOUT_PAIR; `predictions` new ones produced at `pace_per_s`.
    Minutes base.. are this run's; the one at `base` is the snapshot that proves a stream subscribed."""
    await produce_predictions(producer, topic, [make_prediction(FANOUT_PAIR, base, datetime.now(UTC))])
    first, last = base + 1, base + predictions
    subs = await Subscribers.start(subscriber_binary, target, count, [FANOUT_PAIR])
    await subs.ready()
    await asyncio.sleep(1)
    meter = CpuMeter(*serving_pids)
    started = time.perf_counter()
    for i, minute in enumerate(range(first, last + 1)):
        delay = started + i / pace_per_s - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await produce_predictions(producer, topic, [make_prediction(FANOUT_PAIR, minute, datetime.now(UTC))])
    await asyncio.sleep(DRAIN_S)
    records = [r for r in await subs.results() if first <= r[2] <= last]
    return fanout_result(count, predictions, pace_per_s, records, meter.read(), subs.cpu_s)


def fanout_result(
    count: int,
    predictions: int,
    pace_per_s: float,
    records: list[tuple[int, str, int, float, float]],
    cpu: dict[str, float],
    subscribers_cpu_s: float,
) -> dict[str, Any]:
    latencies = [(received - made_at) * 1000 for *_, received, made_at in records]
    unique = len({(stream, minute) for stream, _, minute, _, _ in records})
    return {
        "subscribers": count,
        "predictions": predictions,
        "pace": pace_per_s,
        "expected": count * predictions,
        "delivered": unique,
        "duplicates": len(records) - unique,
        # CPU per prediction fanned out (ms): the server's; the subscriber processes' together.
        "server_ms": cpu["server_s"] / predictions * 1000,
        "client_ms": subscribers_cpu_s / predictions * 1000,
        "machine_busy": cpu["machine_busy"],
        "others": others(cpu, subscribers_cpu_s),
        "lat": summary(latencies),
    }


DIRECT = "service"  # subscribers on the Python server itself
EDGE = "service via stream edge"  # subscribers on the stream edge in front of it (the headline)


def start_edge(services: Services, settings: Any, server_port: int, binary: Path) -> str:
    """The stream edge (grpc_server/edge.py) in front of the bench's server; returns its target."""
    from grpc_server.edge import KAFKA_PASSWORD_ENV, edge_command

    edge_settings = settings.model_copy(
        update={
            "grpc": settings.grpc.model_copy(
                update={"host": "127.0.0.1", "port": server_port, "edge_port": free_port()}
            ),
            "metrics": settings.metrics.model_copy(update={"edge_port": -1}),
            # It reads the bench run's predictions topic, as the server does.
            "kafka": settings.kafka.model_copy(
                update={"topic_prefix": services.env["CRYPTOPREDICT_KAFKA__TOPIC_PREFIX"]}
            ),
        }
    )
    command, env = edge_command(edge_settings, binary)
    # Of its environment, only the Kafka password (with SASL_SSL) is not in the bench's own already.
    password = {k: v for k, v in env.items() if k == KAFKA_PASSWORD_ENV}
    services.start("edge", *command[1:], program=command[0], extra_env=password)
    return f"127.0.0.1:{edge_settings.grpc.edge_port}"


# ---------------------------------------------------------------- candle to client


def linear_champion_features() -> list[str]:
    """What the stream worker's prediction agent computes for a champion: the return lags and the
    indicator features at the default settings."""
    from cryptopredict.features.indicators import IndicatorConfig
    from cryptopredict.features.model_inputs import indicator_feature_names, return_feature_names
    from cryptopredict.settings import ModelSettings

    return return_feature_names(ModelSettings().lags) + indicator_feature_names(IndicatorConfig())


def ensure_champions(settings: Any, pairs: list[str]) -> list[str]:
    """A linear champion reading every standard feature in MLflow for each pair (kept from earlier
    runs), so each candle costs what a trained champion's does: its input row built, the model run.
    Its coefficients are fitted to noise: what it forecasts means nothing here."""
    import mlflow
    import pandas as pd
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from cryptopredict.ml import pyfunc, registry
    from cryptopredict.topics import registered_model_name

    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    mlflow.set_experiment("cryptopredict-bench-grpc")
    client = mlflow.MlflowClient()
    horizon_candles = HORIZON_S // INTERVAL_S
    features = linear_champion_features()

    def log_linear() -> tuple[str, str]:
        rng = np.random.default_rng(7)
        x = pd.DataFrame(rng.normal(size=(500, len(features))), columns=features)
        y = x.to_numpy() @ rng.normal(scale=1e-4, size=len(features)) + rng.normal(scale=1e-3, size=500)
        model = make_pipeline(StandardScaler(), Ridge()).fit(x, y)
        with mlflow.start_run(run_name="linear-bench-grpc") as run:
            info = pyfunc.log_forecast_model(
                "linear",
                model,
                features,
                (-0.002, 0.002),
                interval_s=INTERVAL_S,
                horizon_candles=horizon_candles,
                coverage=0.8,
                input_example=x.head(2),
            )
        return info.model_uri, run.info.run_id

    return [
        str(
            registry.ensure_persistence_champion(
                client,
                registered_model_name(pair, INTERVAL_S, horizon_candles),
                log_linear,
                kind="linear",
                reason="bench/grpc.py: a linear champion reading every standard feature",
            ).version
        )
        for pair in pairs
    ]


async def candle_to_client(
    subscriber_binary: Path,
    settings: Any,
    prefix: str,
    targets: dict[str, str],
    services: Services,
    steps: int,
    pace_per_s: float,
) -> dict[str, Any]:
    """Candle close -> a client of each of `targets` (server name -> target; the first is the headline)."""
    from aiokafka import AIOKafkaConsumer

    from cryptopredict.kafka_client import client_kwargs
    from cryptopredict.models import Candle, Trade, TradeBatch
    from cryptopredict.publisher import ReliablePublisher
    from cryptopredict.topics import CANDLES, TRADES, topic_name

    with contextlib.redirect_stdout(sys.stderr):  # MLflow prints run links: stdout ends with the JSON line
        versions = await asyncio.to_thread(ensure_champions, settings, CANDLE_PAIRS)
    print(f"candle to client: linear champions v{versions}; starting the stream worker", file=sys.stderr)
    services.start(
        "worker",
        "-m",
        "streams",
        "worker",
        "-l",
        "warn",
        extra_env={"CRYPTOPREDICT_KRAKEN__PAIRS": json.dumps(CANDLE_PAIRS)},
    )
    # Event time starts at T0 in every run, so the store rows (upserted by key) stay the same run to run.
    # Step m publishes, for each pair, one trade at minute m+1, 10 s in (past the 5 s grace): it closes
    # the 1-minute window m, which holds the trade of step m-1; the prediction's feature_time is minute m.
    clients = {
        server: await Subscribers.start(subscriber_binary, to, 1, CANDLE_PAIRS)
        for server, to in targets.items()
    }
    candles_consumer = AIOKafkaConsumer(
        topic_name(CANDLES, prefix),
        **client_kwargs(settings.kafka),
        auto_offset_reset="earliest",
    )
    await candles_consumer.start()
    closed_at: dict[tuple[str, int], int] = {}  # (pair, minute) -> candle message timestamp (ms)
    t0 = T0.timestamp()

    async def read_candles() -> None:
        while True:
            for records in (await candles_consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    c = Candle.model_validate_json(r.value)
                    if c.interval_s == INTERVAL_S:
                        closed_at.setdefault(
                            (c.pair, int((c.window_start.timestamp() - t0) // 60)), r.timestamp
                        )

    reader = asyncio.create_task(read_candles())
    publisher = ReliablePublisher(settings.kafka)
    await publisher.start()
    trades_topic = topic_name(TRADES, prefix)
    # (pair, closed minute) -> wall time of the closing trade's send
    sent_at: dict[tuple[str, int], float] = {}
    trade_id = 0

    async def step(minute: int) -> None:
        nonlocal trade_id
        for pair in CANDLE_PAIRS:
            trade_id += 1
            at = T0 + timedelta(minutes=minute + 1, seconds=10)
            trade = Trade(
                pair=pair,
                trade_id=trade_id,
                price=100.0 + (trade_id % 7),
                qty=1.0,
                side="buy",
                timestamp=at,
                ingested_at=datetime.now(UTC),
            )
            sent_at[(pair, minute)] = time.time()
            await publisher.publish(
                trades_topic, TradeBatch(pair=pair, trades=[trade]).to_json_bytes(), pair.encode()
            )
        await publisher.flush()

    try:
        # Warm-up, 4 steps a second, until the clients have a prediction (the worker joins its group and
        # loads the champions, and the champion's indicators fill their longest window), then SETTLE
        # steps at the measured pace that are not measured.
        minute = -1
        deadline = time.monotonic() + 240
        while not all(subs.poll_ready() for subs in clients.values()):
            services.check()
            if time.monotonic() > deadline:
                raise TimeoutError("no prediction reached the client within 240 s; see the worker log")
            minute += 1
            await step(minute)
            await asyncio.sleep(0.25)
        print(f"candle to client: predictions flow after {minute + 1} warm-up steps", file=sys.stderr)
        first_measured = minute + 1 + SETTLE_STEPS
        last = first_measured + steps - 1
        started = time.perf_counter()
        for i, m in enumerate(range(minute + 1, last + 1)):
            delay = started + i / pace_per_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await step(m)
        await asyncio.sleep(DRAIN_S)
        records = {server: await subs.results() for server, subs in clients.items()}
    finally:
        await publisher.stop()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await candles_consumer.stop()
    measured = [(pair, m) for pair in CANDLE_PAIRS for m in range(first_measured, last + 1)]
    headline, *rest = records
    received = {(pair, minute): at for _, pair, minute, at, _ in records[headline]}
    made = {(pair, minute): made_at for _, pair, minute, _, made_at in records[headline]}
    seen = [key for key in measured if key in received and key in closed_at]
    direct = {(pair, minute): at for _, pair, minute, at, _ in records[rest[0]]} if rest else {}
    return {
        "candles": len(measured),
        "missing": len(measured) - len(seen),
        "pace": pace_per_s * len(CANDLE_PAIRS),
        "close": summary([received[key] * 1000 - closed_at[key] for key in seen]),
        "trade": summary([(received[key] - sent_at[key]) * 1000 for key in seen]),
        # candle message -> made_at (the agent's clock when the forecast was made) -> client
        "to_made": summary([made[key] * 1000 - closed_at[key] for key in seen]),
        "from_made": summary([(received[key] - made[key]) * 1000 for key in seen]),
        "close_direct": summary([direct[key] * 1000 - closed_at[key] for key in seen if key in direct]),
    }


# ---------------------------------------------------------------- the gRPC floor


def floor_server(port: int, ready: Any, subscribers: int, predictions: int, pace_per_s: float) -> None:
    """Runs in its own process: a bare grpc.aio server with the same two methods, no application code
    (no Kafka, hub, validation or conversion per call): GetLatestPrediction answers with fixed bytes,
    and once `subscribers` streams are open, `predictions` new ones are put on every stream's queue at
    `pace_per_s`, each serialized once, made_at stamped just before. What this machine's Python gRPC
    stack costs by itself, with the same clients."""
    asyncio.run(_floor_server(port, ready, subscribers, predictions, pace_per_s))


async def _floor_server(port: int, ready: Any, subscribers: int, predictions: int, pace_per_s: float) -> None:
    from grpc_server.convert import prediction_to_proto

    def encoded(minute: int) -> bytes:
        message = prediction_to_proto(make_prediction(FANOUT_PAIR, minute, datetime.now(UTC)))
        return pb.StreamPredictionsResponse(prediction=message).SerializeToString()

    latest = encoded(0)
    queues: list[asyncio.Queue[bytes]] = []

    async def get_latest(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return latest

    async def stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        queue_: asyncio.Queue[bytes] = asyncio.Queue(256)
        queues.append(queue_)
        try:
            yield latest
            while True:
                yield await queue_.get()
        finally:
            queues.remove(queue_)

    handlers = {  # no (de)serializers: bytes in, bytes out
        "GetLatestPrediction": grpc.unary_unary_rpc_method_handler(get_latest),
        "StreamPredictions": grpc.unary_stream_rpc_method_handler(stream),
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    # Start-up garbage out of the collector's sight, as a long-running server would do: the floor is
    # gRPC's cost, not that of collection pauses over a heap of imported modules.
    gc.collect()
    gc.freeze()
    ready.set()
    while len(queues) < subscribers:  # noqa: ASYNC110 - the streams arrive through gRPC, not an event
        await asyncio.sleep(0.05)
    await asyncio.sleep(1)
    started = time.perf_counter()
    for i in range(predictions):
        await asyncio.sleep(max(0.0, started + i / pace_per_s - time.perf_counter()))
        message = encoded(FLOOR_BASE + i)
        for queue_ in queues:
            queue_.put_nowait(message)
    await server.wait_for_termination()


async def run_floor(
    ctx: Any,
    unary_loads: list[tuple[str, int, int, float]],
    duration_s: float,
    fanout: tuple[int, int, float],
    load_binary: Path,
    subscriber_binary: Path,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The unary loads and one fan-out against `floor_server`, with the clients of the real runs."""
    subscribers, predictions, pace_per_s = fanout
    port = free_port()
    target = f"127.0.0.1:{port}"
    ready = ctx.Event()
    process = ctx.Process(
        target=floor_server, args=(port, ready, subscribers, predictions, pace_per_s), daemon=True
    )
    process.start()
    try:
        if not await asyncio.to_thread(ready.wait, 60):
            raise TimeoutError("the floor server did not start")
        unary = []
        for mode, clients, processes, rate in unary_loads:
            unary.append(
                await asyncio.to_thread(
                    run_unary, ctx, target, process.pid, clients, processes, mode, rate, duration_s
                )
            )
            report_unary("floor", unary[-1])
        unary.append(
            await asyncio.to_thread(
                go_unary_load, load_binary, target, [process.pid], HEADLINE_RATE, duration_s
            )
        )
        report_unary("floor", unary[-1])
        subs = await Subscribers.start(subscriber_binary, target, subscribers, [FANOUT_PAIR])
        await subs.ready()
        meter = CpuMeter(process.pid)
        await asyncio.sleep(1 + predictions / pace_per_s + DRAIN_S)
        records = [r for r in await subs.results() if r[2] >= FLOOR_BASE]
        result = fanout_result(subscribers, predictions, pace_per_s, records, meter.read(), subs.cpu_s)
        report_fanout("floor", result)
    finally:
        process.terminate()
        process.join(10)
    return unary, result


# ---------------------------------------------------------------- main


def report_unary(server: str, r: dict[str, Any]) -> None:
    lat = r["lat"]
    print(
        f"{server}: unary {r['mode']}, {r['clients']} client(s), offered req/s {offered(r)}: "
        f"{r['throughput']:,.0f} req/s, "
        f"p50 {lat['p50']:.3f} ms, p99 {lat['p99']:.3f} ms, max {lat['max']:.1f} ms, errors {r['errors']}; "
        f"send lag p99 {lag(r)} ms; CPU per request: server {r['server_us']:.0f} us, client {r['client_us']:.0f} us; "
        f"rest of the machine {r['others']:.2f} cores"
        + (f"; errors: {r['error_kinds']}" if r.get("error_kinds") else ""),
        file=sys.stderr,
    )


def report_fanout(server: str, r: dict[str, Any]) -> None:
    lat = r["lat"]
    print(
        f"{server}: fan-out to {r['subscribers']:,} subscribers: {r['delivered']:,} of {r['expected']:,} "
        f"delivered, p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms, max {lat['max']:.1f} ms; CPU per "
        f"prediction: server {r['server_ms']:.1f} ms, subscribers {r['client_ms']:.1f} ms; "
        f"rest of the machine {r['others']:.2f} cores",
        file=sys.stderr,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short phases (about four minutes a run)")
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"comma-separated subset of {','.join(PHASES)}; a partial run prints, never writes the docs",
    )
    parser.add_argument(
        "--server-root",
        type=Path,
        default=ROOT,
        help="run the server and the stream worker from this checkout (to measure a patch); not written to the docs",
    )
    parser.add_argument(
        "--runs", type=int, default=RUNS, help="runs, each in a fresh process (default %(default)s)"
    )
    parser.add_argument(RUN_OUTPUT, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    phases = set(args.phases.split(","))
    if not phases <= set(PHASES):
        parser.error(f"unknown phase(s) {sorted(phases - set(PHASES))}")
    if args.run_output is not None:  # one run, in a process of its own
        args.run_output.write_text(
            json.dumps(asyncio.run(one_run(args.quick, phases, args.server_root.resolve())))
        )
        return
    passed = ["--phases", args.phases, "--server-root", str(args.server_root)] + (
        ["--quick"] if args.quick else []
    )
    runs = across_runs(repeat_runs(Path(__file__).resolve(), passed, args.runs))
    if phases == set(PHASES) and args.server_root.resolve() == ROOT:
        write_report(args.quick, args.runs, runs["unary"], runs["fanout"], runs["candle"], runs["floor"])
    else:  # a partial or comparison run: the figures it has, not written to the docs
        print(json.dumps(figures(runs["unary"], runs["fanout"], runs["candle"])))


async def one_run(quick: bool, phases: set[str], server_root: Path) -> dict[str, Any]:
    """Every phase asked for, once, on services of its own: the results as plain data."""
    from aiokafka import AIOKafkaProducer

    from cryptopredict.kafka_admin import delete_topics_under, ensure_topics
    from cryptopredict.kafka_client import client_kwargs
    from cryptopredict.settings import get_settings
    from cryptopredict.stack.tools import install_go_tools
    from cryptopredict.topics import PREDICTIONS, topic_name

    settings = get_settings()
    go_tools = install_go_tools(
        settings.local_dir.resolve() / "bin", ["unary-load", "stream-subscribers", "stream-edge"]
    )
    load_binary, subscriber_binary = go_tools["unary-load"], go_tools["stream-subscribers"]
    ctx = multiprocessing.get_context("spawn")
    run = uuid.uuid4().hex[:6]
    prefix = f"bench-grpc-{run}-"
    port = free_port()
    target = f"127.0.0.1:{port}"
    await ensure_topics(settings.kafka.model_copy(update={"topic_prefix": prefix}))
    env = os.environ | {
        "CRYPTOPREDICT_KAFKA__TOPIC_PREFIX": prefix,
        "CRYPTOPREDICT_GRPC__HOST": "127.0.0.1",
        "CRYPTOPREDICT_GRPC__PORT": str(port),
        # Their /metrics endpoints on free ports, clear of a stack's processes on the default ones.
        "CRYPTOPREDICT_METRICS__GRPC_PORT": "0",
        "CRYPTOPREDICT_METRICS__STREAM_PORT": "0",
    }
    services = Services(env, settings.local_dir.resolve() / "logs", server_root)
    services.start(
        "server",
        "-m",
        "grpc_server",
        # It answers only for the pairs it is configured to forecast.
        extra_env={"CRYPTOPREDICT_KRAKEN__PAIRS": json.dumps([*UNARY_PAIRS, FANOUT_PAIR, *CANDLE_PAIRS])},
    )
    topic = topic_name(PREDICTIONS, prefix)
    producer = AIOKafkaProducer(**client_kwargs(settings.kafka), acks="all", linger_ms=0)
    duration = 5.0 if quick else 15.0
    rates = [HEADLINE_RATE] if quick else [100.0, HEADLINE_RATE, 2000.0]
    loads = [("sequential", 1, 1, 0.0), ("closed", CLIENTS, LOAD_PROCESSES, 0.0)]
    loads += [("open", CLIENTS, LOAD_PROCESSES, rate) for rate in rates]
    fanout_counts = [1, SUBSCRIBERS] if quick else [1, 100, SUBSCRIBERS]
    edge_counts = [SUBSCRIBERS] if quick else [1, 100, SUBSCRIBERS]
    # 120 at 2 a second: the p99 over 120,000 deliveries rests on more than the one slowest prediction.
    fanout_predictions = 20 if quick else 120
    unary: list[dict[str, Any]] = []
    fanout: list[dict[str, Any]] = []
    candle: dict[str, Any] | None = None
    try:
        await wait_serving(target, services)
        server_pid = services.processes["server"].pid
        await producer.start()
        await seed_unary(producer, topic, target)
        print(f"server on {target}, topic prefix {prefix}", file=sys.stderr)
        for mode, clients, processes, rate in loads if "unary" in phases else []:
            unary.append(
                await asyncio.to_thread(
                    run_unary, ctx, target, server_pid, clients, processes, mode, rate, duration
                )
                | {"server": DIRECT}
            )
            report_unary(DIRECT, unary[-1])
            services.check()
        if "unary" in phases:
            unary.append(
                await asyncio.to_thread(
                    go_unary_load, load_binary, target, [server_pid], HEADLINE_RATE, duration
                )
                | {"server": DIRECT}
            )
            report_unary(DIRECT, unary[-1])
            services.check()
        base = 1000  # the minute of the next fan-out run's first prediction

        async def fanout_runs(server: str, to: str, pids: list[int], counts: list[int]) -> None:
            nonlocal base
            for count in counts:
                result = await run_fanout(
                    subscriber_binary, producer, topic, to, pids, count, fanout_predictions, FANOUT_PACE, base
                )
                fanout.append(result | {"server": server})
                base += fanout_predictions + 10
                report_fanout(server, fanout[-1])
                services.check()

        if "fanout" in phases:
            await fanout_runs(DIRECT, target, [server_pid], fanout_counts)
        # Started after the direct runs, so that those measure the server alone.
        edge_target = start_edge(services, settings, port, go_tools["stream-edge"])
        await wait_serving(edge_target, services)
        serving_pids = [server_pid, services.processes["edge"].pid]
        if "unary" in phases:
            unary.append(
                await asyncio.to_thread(
                    go_unary_load, load_binary, edge_target, serving_pids, HEADLINE_RATE, duration
                )
                | {"server": EDGE}
            )
            report_unary(EDGE, unary[-1])
            services.check()
        if "fanout" in phases:
            await fanout_runs(EDGE, edge_target, serving_pids, edge_counts)
        if "candle" in phases:
            candle = await candle_to_client(
                subscriber_binary,
                settings,
                prefix,
                {EDGE: edge_target, DIRECT: target},
                services,
                steps=40 if quick else 120,
                pace_per_s=CANDLE_PACE,
            )
            c = candle
            print(
                f"candle to client: {c['candles']} candles ({c['missing']} missing), close -> client "
                f"p50 {c['close']['p50']:.1f} ms, p99 {c['close']['p99']:.1f} ms (close -> made_at p50 / p99 "
                f"{c['to_made']['p50']:.1f} / {c['to_made']['p99']:.1f} ms, made_at -> client "
                f"{c['from_made']['p50']:.1f} / {c['from_made']['p99']:.1f} ms); "
                f"straight from the server p99 {c['close_direct']['p99']:.1f} ms; "
                f"closing trade -> client p99 {c['trade']['p99']:.1f} ms",
                file=sys.stderr,
            )
    finally:
        await producer.stop()
        services.stop()
        await delete_topics_under(settings.kafka, (prefix,))
    floor: tuple[list[dict[str, Any]], dict[str, Any]] | None = None
    if "floor" in phases:
        floor_loads = [load for load in loads if load[0] != "open" or load[3] == HEADLINE_RATE]
        floor = await run_floor(
            ctx,
            floor_loads,
            duration,
            (SUBSCRIBERS, fanout_predictions, FANOUT_PACE),
            load_binary,
            subscriber_binary,
        )
    return {"unary": unary, "fanout": fanout, "candle": candle, "floor": floor}


def figures(
    unary: list[dict[str, Any]], fanout: list[dict[str, Any]], candle: dict[str, Any] | None
) -> dict[str, Any]:
    """The issue's figures (medians) and each run's values (`*_runs`), from results across runs."""
    headline = next((r for r in unary if r["mode"] == GO_MODE and r["server"] == EDGE), None)
    big = next((r for r in fanout if r["subscribers"].median == SUBSCRIBERS and r["server"] == EDGE), None)
    spreads = {
        "unary_p50_ms": headline["lat"]["p50"] if headline else None,
        "unary_p99_ms": headline["lat"]["p99"] if headline else None,
        "subscribers": SUBSCRIBERS if big else None,
        "fanout_p99_ms": big["lat"]["p99"] if big else None,
        "candle_to_client_p99_ms": candle["close"]["p99"] if candle else None,
    }
    return median_figures(
        spreads, {"unary_p50_ms": 3, "unary_p99_ms": 3, "fanout_p99_ms": 2, "candle_to_client_p99_ms": 1}
    )


def verdict(value: Spread, target: float) -> str:
    return "met" if value.within(target) else "missed"


def write_report(
    quick: bool,
    runs: int,
    unary: list[dict[str, Any]],
    fanout: list[dict[str, Any]],
    candle: dict[str, Any],
    floor: tuple[list[dict[str, Any]], dict[str, Any]],
) -> None:
    figs = figures(unary, fanout, candle)
    headline = next(r for r in unary if r["mode"] == GO_MODE and r["server"] == EDGE)
    go_direct = next(r for r in unary if r["mode"] == GO_MODE and r["server"] == DIRECT)
    python_open = next(r for r in unary if r["mode"] == "open" and r["offered"].median == HEADLINE_RATE)
    sequential = next(r for r in unary if r["mode"] == "sequential")
    closed = next(r for r in unary if r["mode"] == "closed")
    floor_unary, floor_fanout = floor

    def unary_row(server: str, r: dict[str, Any]) -> str:
        lat = r["lat"]
        return (
            f"| {server} | {r['mode']} | {r['clients']} | {offered(r)} | {r['throughput']:,.0f} | "
            f"{fmt(lat['p50'])} | {fmt(lat['p95'])} | {fmt(lat['p99'])} | {fmt(lat['max'])} | {r['errors']} | "
            f"{lag(r)} | {r['server_us']:,.0f} | {r['client_us']:,.0f} | {r['others']:.2f} |"
        )

    def fanout_row(server: str, r: dict[str, Any]) -> str:
        lat = r["lat"]
        return (
            f"| {server} | {r['subscribers']:,} | {r['delivered'].low:,} / {r['expected']:,} | {fmt(lat['p50'])} | "
            f"{fmt(lat['p95'])} | {fmt(lat['p99'])} | {fmt(lat['max'])} | {r['server_ms']:,.1f} | "
            f"{r['client_ms']:,.1f} | {r['others']:.2f} |"
        )

    def candle_row(label: str, key: str) -> str:
        c = candle[key]
        return f"| {label} | {fmt(c['p50'])} | {fmt(c['p95'])} | {fmt(c['p99'])} | {fmt(c['max'])} |"

    unary_rows = "\n".join(
        [unary_row(r["server"], r) for r in unary] + [unary_row("bare gRPC floor", r) for r in floor_unary]
    )
    fanout_rows = "\n".join(
        [fanout_row(r["server"], r) for r in fanout] + [fanout_row("bare gRPC floor", floor_fanout)]
    )
    big = next(r for r in fanout if r["subscribers"].median == SUBSCRIBERS and r["server"] == EDGE)
    targets = [
        (
            "GetLatestPrediction p50, 100 clients (1,000 req/s, Go client), via the stream edge",
            headline["lat"]["p50"],
            "unary_p50_ms",
        ),
        (
            "GetLatestPrediction p99, 100 clients (1,000 req/s, Go client), via the stream edge",
            headline["lat"]["p99"],
            "unary_p99_ms",
        ),
        (
            f"StreamPredictions p99, publication -> each of {SUBSCRIBERS:,} subscribers, via the stream edge",
            big["lat"]["p99"],
            "fanout_p99_ms",
        ),
        (
            "candle close -> prediction at a client of the stream edge, p99",
            candle["close"]["p99"],
            "candle_to_client_p99_ms",
        ),
    ]
    target_rows = "\n".join(
        f"| {label} | <= {TARGETS[key]:g} ms | {fmt(value)} | {', '.join(f'{v:.2f}' for v in value.runs)} |"
        f" {verdict(value, TARGETS[key])} |"
        for label, value, key in targets
    )
    body = f"""
The server is `python -m grpc_server` in its own process on a free port, consuming its own topic prefix
on the local broker, so every prediction takes the real path: producer -> topic `predictions` ->
PredictionConsumer -> hub -> RPC. *{EDGE}*: the clients call the stream edge (`cryptopredict edge`,
infra/stream-edge, Go) in front of that server instead: it reads topic `predictions` from Kafka itself
and fans the predictions out, admits each subscription only once the server has accepted it, and
answers GetLatestPrediction from its latest predictions once the server has vouched for the key and the
caller (see docs/serving.md); it is started after the direct runs, and its CPU is counted with the
server's. The clients are other processes on the same 2 cores, which they share
with the server, the broker and the rest of the local stack, and with whatever else runs on the machine:
"rest of the machine" is how many of the 2 cores were busy with anything but the server and the clients
during each measurement (the broker's share of the path included), i.e. how noisy that row is. Every
latency includes the client's own gRPC stack. The client processes pause their garbage collector while
they measure (Python's cyclic one, after freezing what they allocated before; Go's in the stream
subscribers, after a collection), so their own collection pauses are not counted as the server's
latency; the server, the edge and the stream worker run as they are deployed.

Every latency below is the median of {runs} runs with the range over the runs in brackets: each run is
a fresh process of this script with its own server, edge, worker and topic prefix, one after the other
on the same stack. A target is met when the median is within it and every run within 1.5 times it.
Counts and CPU figures are medians; delivered / expected is the worst run's.

| target (issue 22) | target | median (range) of {runs} runs, ms | each run, ms | |
|---|---|---|---|---|
{target_rows}

Against the upstream's claimed REST figures (a Rust endpoint; its load and machine are not stated):

| GetLatestPrediction | upstream REST (claimed) | 100 clients, {HEADLINE_RATE:,.0f} req/s, Go client, via the stream edge (headline) | the same, straight to the Python server | the same load from Python clients, straight to the server | one Python client, one call at a time | closed loop, 100 Python clients in flight |
|---|---|---|---|---|---|---|
| p50 (ms) | {UPSTREAM["p50"]} | {fmt(headline["lat"]["p50"])} | {fmt(go_direct["lat"]["p50"])} | {fmt(python_open["lat"]["p50"])} | {fmt(sequential["lat"]["p50"])} | {fmt(closed["lat"]["p50"])} |
| p95 (ms) | {UPSTREAM["p95"]} | {fmt(headline["lat"]["p95"])} | {fmt(go_direct["lat"]["p95"])} | {fmt(python_open["lat"]["p95"])} | {fmt(sequential["lat"]["p95"])} | {fmt(closed["lat"]["p95"])} |
| p99 (ms) | {UPSTREAM["p99"]} | {fmt(headline["lat"]["p99"])} | {fmt(go_direct["lat"]["p99"])} | {fmt(python_open["lat"]["p99"])} | {fmt(sequential["lat"]["p99"])} | {fmt(closed["lat"]["p99"])} |

**GetLatestPrediction.** One prediction for each of {len(UNARY_PAIRS)} pairs is seeded through Kafka;
each request asks for a random one of them. Latency = call start -> answer, measured in the client.
*sequential*: one client, one call at a time (service time plus both gRPC stacks). *closed*: 100
clients, each with its own channel (HTTP/2 connection), each calling again as soon as its answer
arrives: 100 calls always in flight, so this row is the capacity (achieved req/s) and its latency is
queueing (about 100 / throughput). *open*: the same 100 connected clients, each calling at the times of
a Poisson process, never waiting for an earlier answer; together they offer the stated req/s. Load
generators: {LOAD_PROCESSES} processes of 50 clients. *open (Go)*: the same load from `unary-load`
(Go, grpc-go's client; infra/go-bench), {CLIENTS} connections, a call due every 1/{HEADLINE_RATE:,.0f} s
in turn on each, each in a goroutine of its own (open loop), all for the first seeded pair, the first
{WARMUP_CALLS} calls left out; its collector is paused while it measures, as the Python clients' is. A
Python client spends about as much CPU per call as the server, on the same 2 cores, so its latency is
half its own; ghz, a general Go load generator used here before, spent nearly twice the edge's CPU per
call and collected garbage mid-run. The headline is `unary-load` against the stream edge, which
answers these calls itself (the seeded keys are ones the server streamed, and the caller one it
accepted on the first call). CPU per request: the serving processes' CPU (all threads) over the
measured window / requests;
the load generators' own likewise. Send lag: how late the open loop's calls left against their
schedule (p99), i.e. whether the load generators kept up. A sparse load costs more per call than a busy
one (CPU columns): each call finds the processes idle and waits for their threads to wake.

| server | loop | clients | offered req/s | achieved req/s | p50 (ms) | p95 (ms) | p99 (ms) | max (ms) | errors | send lag p99 (ms) | server CPU (us/req) | client CPU (us/req) | rest of the machine (cores) |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
{unary_rows}

**StreamPredictions fan-out.** N streams subscribe to one pair ({STREAMS_PER_CHANNEL} streams share a
connection; the streams are a Go process's, `stream-subscribers` from infra/go-bench); once every stream has
its first message (the hub's snapshot), {figs_predictions(fanout)} new predictions of the pair are
produced to Kafka, {FANOUT_PACE:g} a second. Publication = the producer's wall clock just before
`send`, written into made_at; latency = the client's wall clock when the message comes out of the
stream - made_at (one clock: same machine). It covers the Kafka produce, the server's consumer, the hub,
gRPC (via the edge: the server's stream to the edge, then the edge's to each subscriber) and the client. The subscribers keep the raw messages and parse them after the run, so they spend
as little as possible while measured; they are Go because Python subscribers (earlier runs: 2 processes
of 500 streams) spent about 68 ms of CPU receiving each prediction on 1,000 streams, more than the
server's sending, on the same 2 cores. delivered / expected counts (stream, prediction) pairs: every subscriber must
receive every prediction exactly once.

| server | subscribers | delivered / expected | p50 (ms) | p95 (ms) | p99 (ms) | max (ms) | server CPU (ms/prediction) | subscribers' CPU (ms/prediction) | rest of the machine (cores) |
|---|---|---|---|---|---|---|---|---|---|
{fanout_rows}

*bare gRPC floor*: a grpc.aio server in its own process with the same two methods and no application
code (fixed response bytes; for the fan-out, each prediction serialized once and put on every stream's
queue, made_at stamped just before, no Kafka hop; start-up objects frozen out of the garbage
collector's sight), measured by the same clients: what Python gRPC costs on this machine by itself.

**Candle close to client.** A Faust worker (`python -m streams worker`, every agent: candles, indicators,
predictions, store sinks) on the same topic prefix, with a linear champion in MLflow for each of
{len(CANDLE_PAIRS)} pairs (registered once, kept across runs; it reads the {len(linear_champion_features())} standard features, the
return lags and the indicators, so each candle's input row is built and the model run as for a trained
champion; its coefficients are fitted to noise), and two clients streaming the three pairs:
one from the stream edge (the headline) and one straight from the Python server.
Each step publishes one trade per pair 10 s (event time) into the next minute, which closes the pair's
1-minute window (grace 5 s); {CANDLE_PACE:g} steps a second, after a warm-up (until predictions reach the
client) and {SETTLE_STEPS} unmeasured steps. Candle close = the Kafka timestamp of the candle's message
(set by the candle builder when it sends the closed window); client = the client's wall clock at receipt
of the prediction with that feature_time. The prediction agent of the same worker starts the forecast
as the candle is sent (streams/ahead.py), so made_at follows the close by about a millisecond and the
forecast's own Kafka hop to the edge is most of the rest. {candle["candles"]} candles measured, {candle["missing"].high:,} without a
prediction at the edge's client (the worst run).

| from -> to | p50 (ms) | p95 (ms) | p99 (ms) | max (ms) |
|---|---|---|---|---|
{candle_row("candle message -> prediction at the client of the stream edge (headline)", "close")}
{candle_row("candle message -> prediction at the client of the Python server", "close_direct")}
{candle_row("candle message -> made_at (the agent's clock when the forecast was made)", "to_made")}
{candle_row("made_at -> prediction at the edge's client", "from_made")}
{candle_row("closing trade produced -> prediction at the client", "trade")}
"""
    command = (
        "python bench/grpc.py" + (" --quick" if quick else "") + (f" --runs {runs}" if runs != RUNS else "")
    )
    publish("gRPC serving: unary, fan-out, candle to client", command, body, figs)


def figs_predictions(fanout: list[dict[str, Any]]) -> str:
    return f"{fanout[0]['predictions']}" if fanout else "n/a"


if __name__ == "__main__":
    main()
