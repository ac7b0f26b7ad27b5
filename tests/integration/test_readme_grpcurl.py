"""Every grpcurl command of docs/serving.md's "gRPC with grpcurl" block, run against a live server.

The examples lived in the README until it became a front page (hence this module's name); they are now in
docs/serving.md, under the heading HEADING. The commands are read from that page as written: `\\`
continuations joined, shell quoting and trailing comments parsed. Three things change before a command
runs, nothing else:

- the address 127.0.0.1:50051 becomes the test server's (it listens on a free port);
- the pair BTC/USD becomes a pair of this module's own, because the ledger lives in the shared feature
  store, where other runs' BTC/USD rows would change the figures (the server serves it on Kraken and on
  Coinbase, with predictions of each);
- `-max-time` is capped at MAX_TIME_S, so a stream example ends within seconds.

Each command must exit 0 and print what it promises (see `check_call`). The one exception: a
server-streaming call ended by its `-max-time` exits with grpcurl's 64 + DEADLINE_EXCEEDED, which is
how such an example ends for anyone who runs it. A command calling an RPC without a check here must
still exit 0 and print JSON: seed what it needs in `served` and add a check to `check_call`.
`test_the_block_covers_the_api` requires an example of every RPC the server implements, and
`test_the_example_response_is_what_the_server_prints` checks the JSON response shown after the block.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.json_format import MessageToDict, ParseDict
from grpc_health.v1 import health_pb2
from mlflow import MlflowClient
from test_grpc_server import log_persistence
from topic_prefixes import session_pair

from cryptopredict.ml.intervals import kupiec_pvalue
from cryptopredict.ml.registry import ensure_persistence_champion
from cryptopredict.models.ml import Prediction, QuantilePrice
from cryptopredict.settings import GrpcSettings, Settings, get_settings
from cryptopredict.simulators.markets import synthetic_candles
from cryptopredict.store.candles import async_engine, upsert_candles, upsert_predictions
from cryptopredict.store.migrate import migrate
from cryptopredict.topics import registered_model_name
from grpc_server import server as grpc_server_module
from grpc_server.convert import only_quantiles, prediction_to_proto
from grpc_server.hub import PredictionHub
from grpc_server.pb import predictions_pb2 as pb
from grpc_server.pb import predictions_pb2_grpc as pb_grpc
from grpc_server.server import SERVICE_NAME, RunningServer, requested_exchange, requested_market, start_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "serving.md"
DOC_NAME = "docs/serving.md"
HEADING = "## gRPC with grpcurl"
GRPCURL = ".local/bin/grpcurl"  # as the docs write it, relative to the checkout (the stack installs it)
EXAMPLE_TARGET = "127.0.0.1:50051"
EXAMPLE_PAIR = "BTC/USD"
MAX_TIME_S = 4.0
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SHELL_OPERATORS = {"|", "||", "&", "&&", ";", ">", ">>", "<", "2>", "2>&1"}
# grpcurl's flags that take no value; every other flag takes the next argument unless written -flag=value.
BOOL_FLAGS = {
    "plaintext", "insecure", "emit-defaults", "allow-unknown-fields", "format-error", "v", "vv",
    "expand-headers", "msg-template", "use-reflection", "alts", "unix", "help", "version",
}  # fmt: skip
DEADLINE_EXCEEDED_EXIT = 64 + grpc.StatusCode.DEADLINE_EXCEEDED.value[0]


def example_response() -> dict[str, Any] | None:
    """The first JSON block after HEADING: a response as grpcurl prints it."""
    text = DOC.read_text().split(f"{HEADING}\n", 1)[-1]
    block = re.search(r"^```json\n(.*?)^```$", text, re.S | re.M)
    return json.loads(block.group(1)) if block else None


def example_commands() -> list[str]:
    """The logical command lines of the first bash block after HEADING (empty when there is none)."""
    lines = DOC.read_text().splitlines()
    if HEADING not in lines:
        return []
    start = lines.index(HEADING)
    opening = next((i for i in range(start + 1, len(lines)) if lines[i].strip() == "```bash"), None)
    if opening is None or any(line.startswith("#") for line in lines[start + 1 : opening]):
        return []  # no bash block before the next heading
    commands, current = [], ""
    for line in lines[opening + 1 :]:
        if line.strip() == "```":
            break
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        command, current = (current + line).strip(), ""
        if command and not command.startswith("#"):
            commands.append(command)
    return commands


@dataclass
class GrpcurlCall:
    """An example command parsed like grpcurl parses its arguments, with the test's substitutions."""

    argv: list[str]
    flags: dict[str, str]
    verb: str  # "list", "describe" or the full method name "package.Service/Method"
    symbol: str | None  # what `list` / `describe` name, if anything
    request: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> Any:  # a MethodDescriptor
        return descriptor_pool.Default().FindMethodByName(self.verb.replace("/", "."))


def parse_command(command: str, target: str, pair: str) -> GrpcurlCall:
    tokens = shlex.split(command, comments=True)
    assert tokens and tokens[0] == GRPCURL, f"not a {GRPCURL} command (only those belong in this block)"
    assert not SHELL_OPERATORS & set(tokens), "shell operators are not run; write one grpcurl call per line"
    assert not any("$" in token for token in tokens), "shell variables are not expanded here"
    argv, flags, i = [str(REPO / GRPCURL)], {}, 1
    while i < len(tokens) and tokens[i].startswith("-"):
        name, has_value, value = tokens[i].lstrip("-").partition("=")
        if not has_value and name not in BOOL_FLAGS:
            i += 1
            value = tokens[i]
        if name == "d":
            value = value.replace(EXAMPLE_PAIR, pair)
        elif name == "max-time":
            value = str(min(float(value), MAX_TIME_S))
        flags[name] = value
        if has_value:
            argv.append(f"-{name}={value}")
        else:
            argv += [f"-{name}"] if name in BOOL_FLAGS else [f"-{name}", value]
        i += 1
    positional = tokens[i:]
    assert positional and positional[0] == EXAMPLE_TARGET, f"the address must be {EXAMPLE_TARGET}"
    assert len(positional) in (2, 3), "expected: address, then list/describe [symbol] or one method"
    argv += [target, *positional[1:]]
    verb, symbol = positional[1], positional[2] if len(positional) == 3 else None
    if verb not in ("list", "describe"):
        assert symbol is None, "a method call takes no further argument"
        service, _, method = verb.rpartition("/") if "/" in verb else verb.rpartition(".")
        verb = f"{service}/{method}"
    request = json.loads(flags["d"]) if flags.get("d") else {}
    return GrpcurlCall(argv, flags, verb, symbol, request)


def json_messages(text: str) -> list[Any]:
    """grpcurl prints one JSON document per response message, one after the other."""
    decoder, messages, i = json.JSONDecoder(), [], 0
    text = text.strip()
    while i < len(text):
        message, i = decoder.raw_decode(text, i)
        messages.append(message)
        while i < len(text) and text[i].isspace():
            i += 1
    return messages


def as_json(message: Any) -> dict[str, Any]:
    # How grpcurl prints a message: proto field names, int64 as strings, unset fields left out.
    return MessageToDict(message, preserving_proto_field_name=True)


@dataclass
class Served:
    """The live server and what the test put behind it."""

    server: RunningServer
    pair: str
    ledger: dict[str, Any]  # pair's expected GetLedger entry (interval 60, every model version)
    model_name: str  # registered for (pair, 60 s, 1 candle), with the persistence baseline as champion
    minute: int = 0
    # What the hub holds: the latest prediction per (market, interval_s, horizon_s), as published.
    latest: dict[tuple[str, int, int], Prediction] = field(default_factory=dict)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def publish(self, interval_s: int = 60, horizon_s: int = 60, exchange: str = "kraken") -> Prediction:
        self.minute += 1
        feature_time = T0 + timedelta(minutes=self.minute)
        prediction = Prediction(
            exchange=exchange,
            pair=self.pair,
            interval_s=interval_s,
            horizon_s=horizon_s,
            made_at=feature_time + timedelta(seconds=1),
            feature_time=feature_time,
            target_time=feature_time + timedelta(seconds=horizon_s),
            last_price=60_000.0 + self.minute,
            predicted_price=60_010.5 + self.minute,
            model_name="cryptopredict-readme",
            model_version="2",
            lower_price=59_900.0 + self.minute,
            upper_price=60_100.0 + self.minute,
            interval_level=0.805,
            quantiles=[
                QuantilePrice(level=0.1, price=59_950.0 + self.minute),
                QuantilePrice(level=0.5, price=60_010.5 + self.minute),
                QuantilePrice(level=0.9, price=60_070.0 + self.minute),
            ],
            predicted_volatility=0.00041,
            volatility_regime="mid",
        )
        assert self.server.hub.publish(prediction)
        self.latest[prediction.market, interval_s, horizon_s] = prediction
        return prediction


async def seed_ledger(settings: Settings, pair: str) -> dict[str, Any]:
    """Three predictions of model version 4 with realised prices in the store; returns the GetLedger entry."""
    migrate(settings.postgres)
    candles = synthetic_candles(pair, 60, 5, T0, seed=5)
    made = [
        Prediction(
            pair=pair,
            interval_s=60,
            horizon_s=60,
            made_at=c.window_end + timedelta(seconds=1),
            feature_time=c.window_end,
            target_time=c.window_end + timedelta(seconds=60),
            last_price=c.close,
            predicted_price=c.close + 2.0,
            model_name="cryptopredict-readme",
            model_version="4",
            lower_price=c.close - 100.0,
            upper_price=c.close + 100.0,
            interval_level=0.8,
            volatility_regime=regime,
        )
        for c, regime in zip(candles[:3], ["calm", "calm", "wild"], strict=True)
    ]
    engine = async_engine(settings.postgres)
    try:
        await upsert_predictions(engine, made)
        await upsert_candles(engine, candles)
    finally:
        await engine.dispose()
    realised = {c.window_end: c.close for c in candles}
    live_mae = sum(abs(p.predicted_price - realised[p.target_time]) for p in made) / len(made)
    persistence_mae = sum(abs(p.last_price - realised[p.target_time]) for p in made) / len(made)
    return {
        "model_name": "cryptopredict-readme",
        "model_version": "4",
        "outcomes": str(len(made)),
        "live_mae": pytest.approx(live_mae),
        "persistence_mae": pytest.approx(persistence_mae),
        "skill_vs_persistence": pytest.approx(1 - live_mae / persistence_mae),
        "interval_coverage": 1.0,
        "coverage_by_regime": {"calm": 1.0, "wild": 1.0},
        "interval_score": pytest.approx(200.0),  # every band 200 wide, no miss
        "kupiec_pvalue": pytest.approx(kupiec_pvalue([True] * 3, settings.model.interval_coverage)),
        "christoffersen_pvalue": 1.0,  # no miss: nothing to cluster
    }


@pytest.fixture(scope="module")
async def served() -> AsyncIterator[Served]:
    pair = session_pair("R")
    base = get_settings()
    # The server answers for configured pairs only: here the test's pair stands in for BTC/USD.
    settings = base.model_copy(
        update={
            "grpc": GrpcSettings(host="127.0.0.1", port=0),
            "venues": ["kraken", "coinbase"],
            "kraken": base.kraken.model_copy(update={"pairs": [pair]}),
            "coinbase": base.coinbase.model_copy(update={"pairs": [pair]}),
        }
    )
    ledger = await seed_ledger(settings, pair)
    registry = MlflowClient(settings.mlflow.tracking_uri)
    model_name = registered_model_name(pair, 60, 1)
    ensure_persistence_champion(registry, model_name, log_persistence)
    try:
        async with start_server(settings, PredictionHub(), consume=False, grace=0.5) as server:
            served = Served(server, pair, ledger, model_name)
            served.publish(horizon_s=60)
            served.publish(horizon_s=300)
            served.publish(interval_s=300)
            served.publish(horizon_s=60, exchange="coinbase")
            yield served
    finally:
        registry.delete_registered_model(model_name)


def stream_filter(request: dict[str, Any]) -> tuple[str | None, set[str], int, int]:
    """StreamPredictions' exchange (None: every one), pairs, interval and horizon; empty or 0 means all."""
    return (
        requested_exchange(request.get("exchange", "")),
        set(request.get("pairs", [])),
        int(request.get("interval_s", 0)),
        int(request.get("horizon_s", 0)),
    )


def check_call(
    call: GrpcurlCall, served: Served, stdout: str, before: list[Prediction], live: Prediction | None
) -> None:
    """What each kind of command must print; an RPC without a check here only has to print JSON."""
    if call.verb == "list":
        names = stdout.split()
        if call.symbol is None:
            assert {SERVICE_NAME, HEALTH_SERVICE} <= set(names), stdout
        else:
            assert names and all(name.startswith(f"{call.symbol}.") for name in names), stdout
        return
    if call.verb == "describe":
        assert (f"{call.symbol} is a " if call.symbol else f"{SERVICE_NAME} is a service:") in stdout, stdout
        return
    messages = json_messages(stdout)
    assert messages, "no response message"
    request = call.request
    if call.verb == f"{SERVICE_NAME}/GetLatestPrediction":
        horizon_s = int(request.get("horizon_s", 0)) or None
        market = requested_market(request.get("exchange", ""), request["pair"])
        latest = served.server.hub.latest(market, int(request["interval_s"]), horizon_s)
        assert latest is not None, "the example asks for something the test did not seed"
        prediction = latest.prediction
        if "quantile_levels" in request:
            prediction = only_quantiles(prediction, request["quantile_levels"])
            assert prediction.quantiles, "the example selects quantile levels the test did not seed"
        expected = pb.GetLatestPredictionResponse(prediction=prediction_to_proto(prediction))
        assert messages == [as_json(expected)]
    elif call.verb == f"{SERVICE_NAME}/StreamPredictions":
        # The latest prediction of each matching key, oldest first, then the live one published meanwhile.
        assert live is not None
        exchange, pairs, interval_s, horizon_s = stream_filter(request)
        wanted = [
            p
            for p in before
            if exchange in (None, p.exchange)
            and (not pairs or p.pair in pairs)
            and interval_s in (0, p.interval_s)
            and horizon_s in (0, p.horizon_s)
        ]
        expected = [
            as_json(pb.StreamPredictionsResponse(prediction=prediction_to_proto(p))) for p in [*wanted, live]
        ]
        assert messages == expected
    elif call.verb == f"{SERVICE_NAME}/GetLedger":
        assert request["pair"] == served.pair and int(request["interval_s"]) == 60, (
            f"seeded: {EXAMPLE_PAIR}, interval 60"
        )
        assert "since" not in request, "seeded: no check for `since`"
        assert request.get("exchange", "kraken") == "kraken", "seeded: Kraken's ledger"
        wanted = [
            e for e in [served.ledger] if request.get("model_version") in (None, "", e["model_version"])
        ]
        assert messages == [{"entries": wanted} if wanted else {}]
    elif call.verb in (f"{SERVICE_NAME}/ListModels", f"{SERVICE_NAME}/GetModel"):
        models = messages[0]["models"] if call.verb.endswith("ListModels") else [messages[0]["model"]]
        assert [(m["name"], m["champion"]["kind"]) for m in models] == [(served.model_name, "persistence")]
        assert models[0]["pair"] == served.pair and "challenger" not in models[0]
        assert models[0]["exchange"] == "kraken", "seeded: Kraken's model"
    elif call.verb == f"{HEALTH_SERVICE}/Check":
        assert messages == [{"status": "SERVING"}]


def command_id(command: str) -> str:
    """What a command does, as its test id: the words after the address."""
    words = command.split("#")[0].split()
    return " ".join(words[words.index(EXAMPLE_TARGET) + 1 :]) if EXAMPLE_TARGET in words else command


@pytest.mark.parametrize("command", example_commands(), ids=command_id)
async def test_docs_grpcurl_command(served: Served, command: str) -> None:
    assert (REPO / GRPCURL).exists(), f"{GRPCURL} is missing: `cryptopredict stack up` installs it"
    call = parse_command(command, served.target, served.pair)
    try:
        streaming = call.verb not in ("list", "describe") and call.method.server_streaming
    except KeyError:
        pytest.fail(f"{call.verb}: no such method in the generated modules")
    assert not streaming or "max-time" in call.flags, "a stream example needs -max-time, or it never ends"
    hub = served.server.hub
    before = sorted(served.latest.values(), key=lambda p: (p.feature_time, p.made_at))
    subscribers = hub.subscriber_count
    process = await asyncio.create_subprocess_exec(
        *call.argv, cwd=REPO, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    live = None
    if streaming:
        # Once subscribed, a new prediction of the requested kind: the stream must deliver it live.
        try:
            async with asyncio.timeout(MAX_TIME_S):
                # Polling: the hub has no event for a new subscriber.
                while hub.subscriber_count == subscribers and process.returncode is None:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
        except TimeoutError:
            process.kill()
            await process.wait()
            pytest.fail(f"{command}\nstill running without a subscription after {MAX_TIME_S} s")
        if process.returncode is None:
            exchange, pairs, interval_s, horizon_s = stream_filter(call.request)
            assert not pairs or served.pair in pairs, (
                f"seeded: the stream example must ask for {EXAMPLE_PAIR}"
            )
            live = served.publish(interval_s or 60, horizon_s or 60, exchange or "kraken")
    stdout, stderr = (out.decode() for out in await asyncio.wait_for(process.communicate(), 30))
    ended_by_max_time = (
        streaming and process.returncode == DEADLINE_EXCEEDED_EXIT and "DeadlineExceeded" in stderr
    )
    assert process.returncode == 0 or ended_by_max_time, (
        f"{command}\nexit code {process.returncode}\n{stderr}\n{stdout}"
    )
    check_call(call, served, stdout, before, live)


def test_the_block_covers_the_api() -> None:
    commands = example_commands()
    assert commands, f'{DOC_NAME} has no bash block under "{HEADING}"'
    calls = [parse_command(command, "127.0.0.1:1", "X/Y") for command in commands]
    shown = {call.verb for call in calls}
    implemented = {
        f"{SERVICE_NAME}/{method.name}"
        for method in pb.DESCRIPTOR.services_by_name["PredictionService"].methods
        if getattr(grpc_server_module.PredictionService, method.name)
        is not getattr(pb_grpc.PredictionServiceServicer, method.name)
    }
    missing = {"list", "describe", f"{HEALTH_SERVICE}/Check", *implemented} - shown
    assert not missing, f"no example in {DOC_NAME} of {sorted(missing)}"


def test_the_example_response_is_what_the_server_prints(served: Served) -> None:
    example = example_response()
    assert example is not None, f'{DOC_NAME} shows no JSON response under "{HEADING}"'
    # A GetLatestPredictionResponse as grpcurl prints it: every field exists, of its type...
    parsed = ParseDict(example, pb.GetLatestPredictionResponse())
    assert as_json(parsed) == example
    # ...with every field the server prints for a prediction that has them all, the new ones among them.
    latest = served.server.hub.latest(served.pair, 60, 60)
    assert latest is not None
    printed = as_json(pb.GetLatestPredictionResponse(prediction=prediction_to_proto(latest.prediction)))
    assert list(example["prediction"]) == list(printed["prediction"])
    for name in ("interval_level", "quantiles", "predicted_volatility", "volatility_regime"):
        assert name in example["prediction"], name
