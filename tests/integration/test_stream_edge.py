"""The stream edge (infra/stream-edge, Go) beside the real gRPC server: it reads the predictions topic from
Kafka itself, serves StreamPredictions from its own fan-out as the server would, has every subscription
admitted by the server, and relays everything else.

Each test has its own topic prefix; predictions reach the server and the edge only through Kafka. The
server runs in this process; the edge is the real binary, built by the project's own Go tool installer,
in a child process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
import topic_prefixes
from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata
from factories import with_uncertainty
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from kafka_proxy import KafkaProxy
from test_grpc_server import (
    EDGE_PAIR,
    T0,
    local_settings,
    make_prediction,
    on_coinbase,
    two_venue_settings,
    wait_until,
)

from cryptopredict import stack
from cryptopredict.cli.demo import free_port
from cryptopredict.kafka_admin import delete_topics, ensure_topics, read_topic, topic_names
from cryptopredict.kafka_client import client_kwargs
from cryptopredict.models.market import DeadLetter
from cryptopredict.models.ml import Prediction
from cryptopredict.settings import KafkaSettings, MetricsSettings, Settings
from cryptopredict.stack.profile import load_profile_settings
from cryptopredict.stack.tools import edge_binary
from cryptopredict.tls import write_self_signed
from cryptopredict.topics import DEAD_LETTERS, PREDICTIONS, topic_name
from grpc_server.client import PLAINTEXT, Credentials, get_latest_prediction, stream_predictions
from grpc_server.convert import prediction_from_proto, prediction_response_bytes
from grpc_server.edge import KAFKA_PASSWORD_ENV, edge_command
from grpc_server.hub import PredictionHub
from grpc_server.pb import predictions_pb2 as pb
from grpc_server.pb import predictions_pb2_grpc as pb_grpc
from grpc_server.server import SERVICE_NAME, RunningServer, start_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

TOKEN = "edge-s3cret"


@dataclass
class Edge:
    process: asyncio.subprocess.Process
    target: str
    metrics_url: str
    log: Path

    async def metric(self, name: str) -> float:
        async with httpx.AsyncClient() as client:
            text = (await client.get(self.metrics_url, timeout=5)).text
        return float(next(line.split()[1] for line in text.splitlines() if line.startswith(f"{name} ")))


async def edge_health(target: str, credentials: Credentials = PLAINTEXT) -> int | None:
    """The edge's health status; None while it does not answer."""
    async with credentials.channel(target) as channel:
        try:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
        except grpc.aio.AioRpcError:
            return None
    return response.status


async def wait_for_health(
    target: str,
    serving: bool,
    timeout: float,  # noqa: ASYNC109
    credentials: Credentials = PLAINTEXT,
) -> None:
    # Polling: health is the edge's own state, observable only by asking.
    async with asyncio.timeout(timeout):
        while (await edge_health(target, credentials) == health_pb2.HealthCheckResponse.SERVING) != serving:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_edge(
    settings: Settings, tmp_path: Path, *, serving: bool = True, env: dict[str, str] | None = None
) -> AsyncIterator[Edge]:
    """The edge for `settings` (whose grpc.port is the running server's, and whose Kafka settings it
    reads), once it is SERVING, or once it answers at all when not `serving`."""
    metrics_port = free_port()
    settings = settings.model_copy(
        update={
            "grpc": settings.grpc.model_copy(update={"edge_port": free_port()}),
            "metrics": MetricsSettings(host="127.0.0.1", edge_port=metrics_port),
        }
    )
    args, edge_env = edge_command(settings, await asyncio.to_thread(edge_binary, settings))
    log = tmp_path / f"edge-{settings.grpc.edge_port}.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *args, env=edge_env | (env or {}), stdout=out, stderr=subprocess.STDOUT
        )
    edge = Edge(
        process, f"127.0.0.1:{settings.grpc.edge_port}", f"http://127.0.0.1:{metrics_port}/metrics", log
    )
    credentials = Credentials.from_settings(settings.grpc)
    try:
        if serving:
            await wait_for_health(edge.target, True, 30, credentials)
        else:
            async with asyncio.timeout(30):
                while await edge_health(edge.target, credentials) is None:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        yield edge
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), 15)


def isolated(settings: Settings, name: str = "edge") -> Settings:
    """`settings` with topics of their own: no other test's predictions, no earlier run's."""
    kafka = settings.kafka.model_copy(update={"topic_prefix": topic_prefixes.run_prefix(name)})
    return settings.model_copy(update={"kafka": kafka})


class Topic:
    """The predictions topic of a test, written as the prediction agent writes it."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka
        self.name = topic_name(PREDICTIONS, kafka.topic_prefix)
        self.producer = AIOKafkaProducer(**client_kwargs(kafka), acks="all", linger_ms=0)

    async def send(self, value: bytes | None, key: str = "BTC/USD") -> RecordMetadata:
        return await self.producer.send_and_wait(self.name, value, key=key.encode())

    async def publish(self, *predictions: Prediction) -> None:
        for prediction in predictions:
            await self.send(prediction.to_json_bytes(), prediction.market)


@contextlib.asynccontextmanager
async def predictions_topic(kafka: KafkaSettings) -> AsyncIterator[Topic]:
    await ensure_topics(kafka)
    topic = Topic(kafka)
    await topic.producer.start()
    try:
        yield topic
    finally:
        await topic.producer.stop()


@pytest.fixture
def run_settings() -> Settings:
    return isolated(local_settings())


@pytest.fixture
async def topic(run_settings: Settings) -> AsyncIterator[Topic]:
    async with predictions_topic(run_settings.kafka) as topic:
        yield topic


@pytest.fixture
async def server(run_settings: Settings, topic: Topic) -> AsyncIterator[RunningServer]:
    """The server, reading the test's topic (the first lookup of a key goes to it)."""
    async with start_server(run_settings, PredictionHub(), consume=True, grace=0.5) as running:
        yield running


def with_port(settings: Settings, port: int) -> Settings:
    return settings.model_copy(update={"grpc": settings.grpc.model_copy(update={"port": port})})


async def until_served(server: RunningServer, *predictions: Prediction) -> None:
    """Until the server has read `predictions` from the topic (each the latest of its key)."""

    def served() -> bool:
        return all(
            (latest := server.hub.latest(p.market, p.interval_s, p.horizon_s)) is not None
            and latest.prediction == p
            for p in predictions
        )

    await wait_until(served, timeout=15)


def minute_of(response: pb.StreamPredictionsResponse) -> int:
    return int((response.prediction.feature_time.ToDatetime().timestamp() - T0.timestamp()) // 60)


async def test_edge_streams_the_latest_then_live_predictions(
    run_settings: Settings, topic: Topic, server: RunningServer, tmp_path: Path
) -> None:
    await topic.publish(
        make_prediction("BTC/USD", minute=0),
        make_prediction("BTC/USD", minute=1),  # replaces minute 0 as the latest
        make_prediction("ETH/USD", minute=1),  # another pair: not requested
        make_prediction("BTC/USD", minute=1, interval_s=300),  # another interval
    )
    await until_served(server, make_prediction("BTC/USD", minute=1, interval_s=300))
    async with running_edge(with_port(run_settings, server.port), tmp_path) as edge:
        async with grpc.aio.insecure_channel(edge.target) as channel:
            call = pb_grpc.PredictionServiceStub(channel).StreamPredictions(
                pb.StreamPredictionsRequest(pairs=["BTC/USD"], interval_s=60), timeout=30
            )
            first = await call.read()  # the snapshot: the edge has subscribed this stream
            assert await edge.metric("cryptopredict_edge_subscribers") == 1
            for minute in (2, 3):
                await topic.publish(
                    make_prediction("ETH/USD", minute=minute), make_prediction("BTC/USD", minute=minute)
                )
            received = [first, await call.read(), await call.read()]
            call.cancel()
        assert [prediction_from_proto(r.prediction) for r in received] == [
            make_prediction("BTC/USD", minute=m) for m in (1, 2, 3)
        ]
        # The whole stream, every pair and interval, through the edge as through the server.
        await until_served(server, make_prediction("BTC/USD", minute=3))
        everything = await stream_predictions(edge.target, [], 0, limit=3, timeout=10)
        direct = await stream_predictions(f"127.0.0.1:{server.port}", [], 0, limit=3, timeout=10)
        # Predictions of the same candle and time may come in either order.
        assert sorted(everything, key=repr) == sorted(direct, key=repr)
        assert [p.feature_time for p in everything] == sorted(p.feature_time for p in everything)
        # The edge holds no stream on the server: its predictions come from Kafka.
        await wait_until(lambda: server.hub.subscriber_count == 0)
        assert await edge.metric("cryptopredict_edge_predictions_total") == 8
        assert await edge.metric("cryptopredict_edge_prediction_delay_seconds_count") > 0


async def test_edge_refuses_what_the_server_refuses_with_its_status(
    run_settings: Settings, server: RunningServer, tmp_path: Path
) -> None:
    async with running_edge(with_port(run_settings, server.port), tmp_path) as edge:
        for request in (
            pb.StreamPredictionsRequest(pairs=["BTCUSD"]),  # malformed pair
            pb.StreamPredictionsRequest(pairs=["DOGE/USD"]),  # not served
            pb.StreamPredictionsRequest(pairs=["BTC/USD"], interval_s=7),  # unknown interval
            pb.StreamPredictionsRequest(pairs=["BTC/USD"], horizon_s=120),  # unknown horizon
            pb.StreamPredictionsRequest(pairs=["BTC/USD"], target="volatility"),  # a target not served
        ):
            errors = []
            for target in (f"127.0.0.1:{server.port}", edge.target):
                async with grpc.aio.insecure_channel(target) as channel:
                    call = pb_grpc.PredictionServiceStub(channel).StreamPredictions(request, timeout=30)
                    with pytest.raises(grpc.aio.AioRpcError) as error:
                        await call.read()
                errors.append((error.value.code(), error.value.details()))
            assert errors[0][0] == grpc.StatusCode.INVALID_ARGUMENT
            assert errors[1] == errors[0]
        # Bytes that are no request at all: the server's own answer.
        errors = []
        for target in (f"127.0.0.1:{server.port}", edge.target):
            async with grpc.aio.insecure_channel(target) as channel:
                raw = channel.unary_stream(f"/{SERVICE_NAME}/StreamPredictions")
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await raw(b"\xff\xff", timeout=10).read()
            errors.append((error.value.code(), error.value.details()))
        assert errors[0][0] != grpc.StatusCode.OK and errors[1] == errors[0]
        assert edge.process.returncode is None


async def test_edge_relays_every_other_method(
    run_settings: Settings, topic: Topic, server: RunningServer, tmp_path: Path
) -> None:
    await topic.publish(make_prediction("BTC/USD", minute=4))
    await until_served(server, make_prediction("BTC/USD", minute=4))
    async with running_edge(with_port(run_settings, server.port), tmp_path) as edge:
        latest = await get_latest_prediction(edge.target, "BTC/USD", 60, 60)
        assert latest == make_prediction("BTC/USD", minute=4)
        assert await get_latest_prediction(edge.target, "ETH/USD", 60, 60) is None  # NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await get_latest_prediction(edge.target, "BTCUSD", 60, 60)
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # A bidirectional stream: reflection, as grpcurl uses it.
        async with grpc.aio.insecure_channel(edge.target) as channel:
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
            services = [s.name async for r in reflection for s in r.list_services_response.service]
        assert SERVICE_NAME in services


ANSWERED_BY_EDGE = 'cryptopredict_edge_latest_total{answered="edge"}'
ANSWERED_UPSTREAM = 'cryptopredict_edge_latest_total{answered="upstream"}'


async def test_edge_answers_latest_lookups_for_keys_and_callers_the_server_vouched_for(
    run_settings: Settings, topic: Topic, server: RunningServer, tmp_path: Path
) -> None:
    await topic.publish(make_prediction("BTC/USD", minute=4))
    await until_served(server, make_prediction("BTC/USD", minute=4))
    async with running_edge(with_port(run_settings, server.port), tmp_path) as edge:
        # The first call goes to the server: the edge has not seen it accept this caller yet.
        assert await get_latest_prediction(edge.target, "BTC/USD", 60, 60) == make_prediction(
            "BTC/USD", minute=4
        )
        assert (await edge.metric(ANSWERED_UPSTREAM), await edge.metric(ANSWERED_BY_EDGE)) == (1, 0)
        assert await get_latest_prediction(edge.target, "BTC/USD", 60, 60) == make_prediction(
            "BTC/USD", minute=4
        )
        assert (await edge.metric(ANSWERED_UPSTREAM), await edge.metric(ANSWERED_BY_EDGE)) == (1, 1)
        # A new prediction replaces the edge's answer as soon as the edge has read it.
        await topic.publish(make_prediction("BTC/USD", minute=5))
        await wait_until_latest(edge.target, make_prediction("BTC/USD", minute=5))
        # What the edge has no prediction of, and a zero horizon (the server's "newest of any"), go upstream.
        await until_served(server, make_prediction("BTC/USD", minute=5))
        upstream = await edge.metric(ANSWERED_UPSTREAM)
        assert await get_latest_prediction(edge.target, "ETH/USD", 60, 60) is None
        assert await get_latest_prediction(edge.target, "BTC/USD", 60, 0) == make_prediction(
            "BTC/USD", minute=5
        )
        assert await edge.metric(ANSWERED_UPSTREAM) == upstream + 2


async def wait_until_metric(edge: Edge, name: str, value: float, timeout: float = 10) -> None:  # noqa: ASYNC109
    # Polling: the edge's figures are its own state, observable only by asking.
    async with asyncio.timeout(timeout):
        while await edge.metric(name) != value:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def wait_until_latest(target: str, expected: object) -> None:
    # Polling: the edge's latest prediction changes as it reads the topic, with no event to await.
    async with asyncio.timeout(10):
        while await get_latest_prediction(target, "BTC/USD", 60, 60) != expected:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_edge_serves_tls_and_the_server_authenticates_its_callers(
    run_settings: Settings, topic: Topic, tmp_path: Path
) -> None:
    cert, key = write_self_signed(tmp_path)
    grpc_settings = local_settings(tokens=[TOKEN], tls_cert_file=str(cert), tls_key_file=str(key)).grpc
    settings = run_settings.model_copy(update={"grpc": grpc_settings})
    await topic.publish(make_prediction())
    async with start_server(settings, PredictionHub(), consume=True, grace=0.5) as running:
        await until_served(running, make_prediction())
        async with running_edge(
            with_port(settings, running.port), tmp_path
        ) as edge:  # watches the server's health over TLS
            tls_only = Credentials(root_certificates=cert.read_bytes())
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stream_predictions(
                    edge.target, ["BTC/USD"], 60, limit=1, timeout=10, credentials=tls_only
                )
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "bearer token" in refused.value.details()
            wrong = Credentials(root_certificates=cert.read_bytes(), token="wrong")
            for credentials in (tls_only, wrong, tls_only, wrong):  # refused by the server every time
                with pytest.raises(grpc.aio.AioRpcError) as refused_unary:
                    await get_latest_prediction(edge.target, "BTC/USD", 60, 60, credentials=credentials)
                assert refused_unary.value.code() == grpc.StatusCode.UNAUTHENTICATED
            full = Credentials(root_certificates=cert.read_bytes(), token=TOKEN)
            streamed = await stream_predictions(
                edge.target, ["BTC/USD"], 60, limit=1, timeout=10, credentials=full
            )
            assert streamed == [make_prediction()]
            # Once the server has answered this caller's lookup of the key, the edge answers it itself.
            for _ in range(2):
                latest = await get_latest_prediction(edge.target, "BTC/USD", 60, 60, credentials=full)
                assert latest == make_prediction()
            assert await edge.metric(ANSWERED_UPSTREAM) == 5
            assert await edge.metric(ANSWERED_BY_EDGE) == 1
            # Plaintext against the edge's TLS port cannot even connect.
            with pytest.raises(grpc.aio.AioRpcError) as plaintext:
                await stream_predictions(edge.target, ["BTC/USD"], 60, limit=1, timeout=3)
            assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_slow_subscriber_drops_its_oldest_without_delaying_a_fast_one(
    run_settings: Settings, topic: Topic, server: RunningServer, tmp_path: Path
) -> None:
    await topic.publish(make_prediction(minute=0))
    async with running_edge(with_port(run_settings, server.port), tmp_path) as edge:
        async with (
            # No BDP probing: the slow client's HTTP/2 window stays at 64 KiB instead of growing to MiBs.
            grpc.aio.insecure_channel(edge.target, options=[("grpc.http2.bdp_probe", 0)]) as slow_channel,
            grpc.aio.insecure_channel(edge.target) as fast_channel,
        ):
            request = pb.StreamPredictionsRequest(pairs=["BTC/USD"], interval_s=60)
            slow = pb_grpc.PredictionServiceStub(slow_channel).StreamPredictions(request, timeout=60)
            fast = pb_grpc.PredictionServiceStub(fast_channel).StreamPredictions(request, timeout=60)
            assert minute_of(await slow.read()) == 0  # subscribed; it reads nothing more until the end
            assert minute_of(await fast.read()) == 0
            last = 4000  # far more than the slow stream's queue and HTTP/2 window hold
            fast_minutes: list[int] = []

            async def read_fast() -> None:
                while not fast_minutes or fast_minutes[-1] < last:
                    fast_minutes.append(minute_of(await fast.read()))

            reader = asyncio.create_task(read_fast())
            sends = []
            for minute in range(1, last + 1):
                value = make_prediction(minute=minute).to_json_bytes()
                sends.append(await topic.producer.send(topic.name, value, key=b"BTC/USD"))
                if minute % 100 == 0:
                    await asyncio.gather(*sends)
                    sends.clear()
            await asyncio.gather(*sends)
            await asyncio.wait_for(reader, 45)
            assert fast_minutes == sorted(fast_minutes)
            dropped = await edge.metric("cryptopredict_edge_dropped_total")
            assert dropped > 0
            # Then the slow client catches up: it ends at the newest, without what was dropped for it.
            slow_minutes: list[int] = []
            while not slow_minutes or slow_minutes[-1] < last:
                slow_minutes.append(minute_of(await slow.read()))
            assert slow_minutes == sorted(slow_minutes)
            assert len(slow_minutes) < last
            slow.cancel()
            fast.cancel()


async def test_edge_drains_streams_at_shutdown(
    run_settings: Settings, topic: Topic, server: RunningServer, tmp_path: Path
) -> None:
    await topic.publish(make_prediction())
    async with running_edge(with_port(run_settings, server.port), tmp_path) as edge:
        async with grpc.aio.insecure_channel(edge.target) as channel:
            call = pb_grpc.PredictionServiceStub(channel).StreamPredictions(
                pb.StreamPredictionsRequest(), timeout=30
            )
            assert minute_of(await call.read()) == 0
            edge.process.send_signal(signal.SIGTERM)
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await asyncio.wait_for(call.read(), 15)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "reconnect" in ended.value.details()
        assert await asyncio.wait_for(edge.process.wait(), 15) == 0


async def test_edge_ends_its_streams_when_the_server_goes_and_admits_again_once_it_is_back(
    topic: Topic, tmp_path: Path
) -> None:
    settings = local_settings(port=free_port()).model_copy(update={"kafka": topic.kafka})
    await topic.publish(make_prediction(minute=0))
    async with contextlib.AsyncExitStack() as first_server:
        first = await first_server.enter_async_context(
            start_server(settings, PredictionHub(), consume=True, grace=0.5)
        )
        await until_served(first, make_prediction(minute=0))
        async with (
            running_edge(settings, tmp_path) as edge,
            grpc.aio.insecure_channel(edge.target) as channel,
        ):
            stub = pb_grpc.PredictionServiceStub(channel)
            request = pb.StreamPredictionsRequest(pairs=["BTC/USD"], interval_s=60)
            before = stub.StreamPredictions(request, timeout=60)
            assert minute_of(await before.read()) == 0
            assert await get_latest_prediction(edge.target, "BTC/USD", 60, 60) == make_prediction(minute=0)
            await first_server.aclose()
            # The server is gone: the edge's streams end as the server's would, and it stops saying SERVING.
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await before.read()
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
            await wait_for_health(edge.target, False, 10)
            assert await edge.metric("cryptopredict_edge_upstream_serving") == 0
            # Without the server nobody is admitted: the edge has no say of its own.
            with pytest.raises(grpc.aio.AioRpcError) as unadmitted:
                await stub.StreamPredictions(request, timeout=10).read()
            assert unadmitted.value.code() == grpc.StatusCode.UNAVAILABLE
            async with start_server(settings, PredictionHub(), consume=True, grace=0.5) as second:
                await wait_for_health(edge.target, True, 45)
                after = stub.StreamPredictions(request, timeout=60)
                # The predictions stay (they come from Kafka): the new stream starts with the latest.
                assert minute_of(await after.read()) == 0
                await topic.publish(make_prediction(minute=9))
                assert minute_of(await after.read()) == 9
                after.cancel()
                # And lookups go to the new server first, whatever it vouched for before.
                await until_served(second, make_prediction(minute=9))
                upstream = await edge.metric(ANSWERED_UPSTREAM)
                assert await get_latest_prediction(edge.target, "BTC/USD", 60, 60) == make_prediction(
                    minute=9
                )
                assert await edge.metric(ANSWERED_UPSTREAM) == upstream + 1
            assert edge.process.returncode is None


async def test_the_uncertainty_fields_reach_an_edge_subscriber_from_the_topic_unchanged(
    run_settings: Settings, topic: Topic, server: RunningServer, tmp_path: Path
) -> None:
    """Topic `predictions` (JSON) -> the edge's consumer, decoder and hub -> a subscriber: the subscriber
    gets the bytes the server encodes, and they decode to the prediction that was produced."""
    pair = EDGE_PAIR
    # Interval level, quantiles, volatility and regime; then none of them (absent stays absent); then again.
    produced = [
        with_uncertainty(make_prediction(pair, minute=1)),
        make_prediction(pair, minute=2),
        with_uncertainty(make_prediction(pair, minute=3)),
    ]
    async with (
        running_edge(with_port(run_settings, server.port), tmp_path) as edge,
        grpc.aio.insecure_channel(edge.target) as channel,
    ):
        # Raw calls: the bytes as they arrive, with no decoding on the way.
        stream = channel.unary_stream(
            f"/{SERVICE_NAME}/StreamPredictions",
            request_serializer=pb.StreamPredictionsRequest.SerializeToString,
        )
        lookup = channel.unary_unary(
            f"/{SERVICE_NAME}/GetLatestPrediction",
            request_serializer=pb.GetLatestPredictionRequest.SerializeToString,
        )
        call = stream(pb.StreamPredictionsRequest(pairs=[pair], interval_s=60, horizon_s=60), timeout=90)
        await wait_until_metric(edge, "cryptopredict_edge_subscribers", 1)
        await topic.publish(*produced)
        received = [await call.read() for _ in produced]
        call.cancel()
        # Byte for byte what the server encodes...
        assert received == [prediction_response_bytes(p) for p in produced]
        # ...and field for field what was produced.
        messages = [pb.StreamPredictionsResponse.FromString(r).prediction for r in received]
        assert [prediction_from_proto(m) for m in messages] == produced
        first, plain = messages[0], messages[1]
        assert [(q.level, q.price) for q in first.quantiles] == [
            (q.level, q.price) for q in produced[0].quantiles
        ]
        assert (first.interval_level, first.predicted_volatility, first.volatility_regime) == (
            0.815,
            0.0007,
            "mid",
        )
        assert not plain.HasField("interval_level") and not plain.HasField("predicted_volatility")
        assert list(plain.quantiles) == [] and plain.volatility_regime == ""
        # The lookup too: answered by the server the first time, by the edge from then on.
        await until_served(server, produced[-1])
        key = pb.GetLatestPredictionRequest(pair=pair, interval_s=60, horizon_s=60)
        answers = [await lookup(key, timeout=10) for _ in range(2)]
        assert answers == [prediction_response_bytes(produced[-1])] * 2
        assert (await edge.metric(ANSWERED_UPSTREAM), await edge.metric(ANSWERED_BY_EDGE)) == (1, 1)


async def test_edge_leaves_quantile_selection_and_targets_to_the_server(
    run_settings: Settings, topic: Topic, server: RunningServer, tmp_path: Path
) -> None:
    prediction = with_uncertainty(make_prediction("BTC/USD", minute=6))
    await topic.publish(prediction)
    await until_served(server, prediction)
    key = {"pair": "BTC/USD", "interval_s": 60, "horizon_s": 60}
    async with (
        running_edge(with_port(run_settings, server.port), tmp_path) as edge,
        grpc.aio.insecure_channel(edge.target) as edge_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as server_channel,
    ):
        via_edge = pb_grpc.PredictionServiceStub(edge_channel)
        direct = pb_grpc.PredictionServiceStub(server_channel)
        for target in ("", "price", ""):  # the server vouches for each lookup once, then the edge answers
            response = await via_edge.GetLatestPrediction(pb.GetLatestPredictionRequest(**key, target=target))
            assert prediction_from_proto(response.prediction) == prediction
        assert (await edge.metric(ANSWERED_UPSTREAM), await edge.metric(ANSWERED_BY_EDGE)) == (2, 1)
        # A selection of quantiles is the server's answer every time, though the key is vouched for.
        for _ in range(2):
            selected = await via_edge.GetLatestPrediction(
                pb.GetLatestPredictionRequest(**key, quantile_levels=[0.9])
            )
            assert [q.level for q in selected.prediction.quantiles] == [0.9]
        assert await edge.metric(ANSWERED_UPSTREAM) == 4
        # What the server refuses, the edge refuses with the same status, for lookups and streams alike.
        for refused in (
            direct.GetLatestPrediction(pb.GetLatestPredictionRequest(**key, target="volatility")),
            via_edge.GetLatestPrediction(pb.GetLatestPredictionRequest(**key, target="volatility")),
            direct.GetLatestPrediction(pb.GetLatestPredictionRequest(**key, quantile_levels=[0.25])),
            via_edge.GetLatestPrediction(pb.GetLatestPredictionRequest(**key, quantile_levels=[0.25])),
            direct.StreamPredictions(pb.StreamPredictionsRequest(target="volatility")).read(),
            via_edge.StreamPredictions(pb.StreamPredictionsRequest(target="volatility")).read(),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await refused
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "not served" in error.value.details()
        assert await edge.metric(ANSWERED_BY_EDGE) == 1


async def test_edge_bounds_streams_per_caller_and_the_server_admits_its_bursts(
    run_settings: Settings, topic: Topic, server: RunningServer, tmp_path: Path
) -> None:
    """The edge holds its subscribers' streams, so it bounds them per caller itself; the server (loopback
    exempt by default) admits a burst of subscribers through the edge beyond its own bound."""
    await topic.publish(make_prediction("BTC/USD", minute=0))
    bounded = local_settings(max_streams_per_caller=2, stream_limit_exempt_hosts=[]).grpc
    request = pb.StreamPredictionsRequest(pairs=["BTC/USD"], interval_s=60)
    async with running_edge(
        with_port(run_settings.model_copy(update={"grpc": bounded}), server.port), tmp_path
    ) as edge:
        async with grpc.aio.insecure_channel(edge.target) as channel:
            stub = pb_grpc.PredictionServiceStub(channel)
            calls = [stub.StreamPredictions(request, timeout=30) for _ in range(2)]
            for call in calls:
                await call.read()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.StreamPredictions(request, timeout=30).read()
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "grpc.max_streams_per_caller" in refused.value.details()
            calls[0].cancel()
            await wait_until_metric(edge, "cryptopredict_edge_subscribers", 1)
            replacement = stub.StreamPredictions(request, timeout=30)
            await replacement.read()
            for call in (calls[1], replacement):
                call.cancel()
    server_bound = server.slots.limit  # the server's default bound, which the edge's admissions exceed
    async with running_edge(with_port(run_settings, server.port), tmp_path) as edge:
        async with grpc.aio.insecure_channel(edge.target) as channel:
            stub = pb_grpc.PredictionServiceStub(channel)
            burst = [stub.StreamPredictions(request, timeout=30) for _ in range(3 * server_bound)]
            await asyncio.gather(*(call.read() for call in burst))
            for call in burst:
                call.cancel()


async def test_edge_keeps_exchanges_apart_and_none_means_kraken(topic: Topic, tmp_path: Path) -> None:
    settings = two_venue_settings().model_copy(update={"kafka": topic.kafka})
    kraken = [make_prediction(minute=m) for m in (1, 4)]
    coinbase = [on_coinbase(make_prediction(minute=m)) for m in (2, 3)]
    await topic.publish(kraken[0], coinbase[0])
    async with start_server(settings, PredictionHub(), consume=True, grace=0.5) as running:
        await until_served(running, kraken[0], coinbase[0])
        async with running_edge(with_port(settings, running.port), tmp_path) as edge:
            # Each stream asks for exactly what it should get, so another exchange's would be among them.
            streams = [
                asyncio.create_task(stream_predictions(edge.target, ["BTC/USD"], 60, limit=2, timeout=20)),
                asyncio.create_task(
                    stream_predictions(edge.target, ["BTC/USD"], 60, limit=2, timeout=20, exchange="coinbase")
                ),
                asyncio.create_task(
                    stream_predictions(edge.target, ["BTC/USD"], 60, limit=4, timeout=20, exchange="*")
                ),
            ]
            await wait_until_metric(edge, "cryptopredict_edge_subscribers", len(streams))
            await topic.publish(coinbase[1], kraken[1])
            unnamed, coinbase_only, every = await asyncio.gather(*streams)
            assert unnamed == kraken and coinbase_only == coinbase
            assert every == [kraken[0], coinbase[0], coinbase[1], kraken[1]]
            # Lookups by exchange: the server answers each key first, then the edge does.
            await until_served(running, kraken[1], coinbase[1])
            for _ in range(2):
                assert await get_latest_prediction(edge.target, "BTC/USD", 60, 60) == kraken[1]
                latest = await get_latest_prediction(edge.target, "BTC/USD", 60, 60, exchange="coinbase")
                assert latest == coinbase[1]
            assert (await edge.metric(ANSWERED_UPSTREAM), await edge.metric(ANSWERED_BY_EDGE)) == (2, 2)
            # An exchange the server does not know: its refusal, through the edge.
            with pytest.raises(grpc.aio.AioRpcError) as unary:
                await get_latest_prediction(edge.target, "BTC/USD", 60, 60, exchange="ftx")
            with pytest.raises(grpc.aio.AioRpcError) as stream:
                await stream_predictions(edge.target, ["BTC/USD"], 60, timeout=10, exchange="ftx")
            for error in (unary.value, stream.value):
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "unknown exchange 'ftx'" in (error.details() or "")


@dataclass
class Minutes:
    """A BTC/USD 1m stream read in the background: the minute of each prediction it delivered."""

    call: grpc.aio.UnaryStreamCall
    received: list[int]
    reader: asyncio.Task[None]

    @property
    def open(self) -> bool:
        return not self.reader.done()


async def read_into(call: grpc.aio.UnaryStreamCall, received: list[int]) -> None:
    """Reads a stream to its end, noting the minute of each prediction."""
    async for response in call:
        received.append(minute_of(response))


@contextlib.asynccontextmanager
async def btc_minutes(target: str, latest: int, timeout: float) -> AsyncIterator[Minutes]:  # noqa: ASYNC109
    """A BTC/USD 1m stream from `target`, once it has delivered the latest prediction (minute `latest`)."""
    async with grpc.aio.insecure_channel(target) as channel:
        call = pb_grpc.PredictionServiceStub(channel).StreamPredictions(
            pb.StreamPredictionsRequest(pairs=["BTC/USD"], interval_s=60), timeout=timeout
        )
        received: list[int] = []
        reader = asyncio.create_task(read_into(call, received))
        try:
            await wait_until(lambda: received == [latest], 10)
            yield Minutes(call, received, reader)
        finally:
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await reader


async def test_a_record_the_server_would_refuse_is_a_dead_letter_and_the_stream_goes_on(
    run_settings: Settings, topic: Topic, server: RunningServer, tmp_path: Path
) -> None:
    await topic.publish(make_prediction(minute=1))
    async with (
        running_edge(with_port(run_settings, server.port), tmp_path) as edge,
        btc_minutes(edge.target, 1, timeout=60) as stream,
    ):
        fields = make_prediction(minute=2).model_dump(mode="json")
        bad = [
            b"not json",
            None,  # a tombstone: no value at all
            json.dumps(fields | {"x": 1}).encode(),
            json.dumps(fields | {"last_price": 0}).encode(),
        ]
        places = [await topic.send(value) for value in bad]
        await topic.publish(make_prediction(minute=2))
        # The stream goes on: the next good prediction arrives, nothing of the bad ones.
        await wait_until(lambda: stream.received == [1, 2], 15)
        assert stream.open
        await wait_until_metric(edge, "cryptopredict_edge_invalid_records_total", len(bad))
        # A log line naming each record's topic, partition and offset...
        log = edge.log.read_text()
        for place in places:
            assert re.search(
                rf"invalid prediction at topic {re.escape(topic.name)} partition {place.partition} "
                rf"offset {place.offset}: ",
                log,
            ), log
        # ...and a dead letter for each, with the record as it was.
        dead_letters = topic_name(DEAD_LETTERS, run_settings.kafka.topic_prefix)
        letters: list[DeadLetter] = []
        async with asyncio.timeout(20):
            while len(letters) < len(bad):
                letters = [
                    DeadLetter.model_validate_json(v)
                    for v in await read_topic(run_settings.kafka, dead_letters, 1)
                ]
        assert {letter.source for letter in letters} == {"stream_edge"}
        assert sorted(letter.raw for letter in letters) == sorted((value or b"").decode() for value in bad)
        assert all(letter.reason.startswith("invalid prediction: ") for letter in letters)
        reasons = " ".join(letter.reason for letter in letters)
        for place in places:
            assert f"(topic {topic.name}, partition {place.partition}, offset {place.offset})" in reasons
        assert "last_price: must be greater than 0" in reasons and "x: extra field not permitted" in reasons


async def test_streams_survive_losing_kafka_and_go_on_once_it_is_back(
    run_settings: Settings, topic: Topic, server: RunningServer, tmp_path: Path
) -> None:
    """The edge reads Kafka through a proxy this test cuts: the shared broker stays up for everyone. It
    stays SERVING meanwhile: the server, which its relayed calls and admissions need, still answers, so
    Kubernetes keeps it among the Service's endpoints; the loss shows in its metric, log and alert."""
    proxy = KafkaProxy(run_settings.kafka.first_host_port)
    await proxy.start()
    through_proxy = run_settings.kafka.model_copy(update={"bootstrap_servers": proxy.address})
    edge_settings = with_port(run_settings.model_copy(update={"kafka": through_proxy}), server.port)
    await topic.publish(make_prediction(minute=0))
    try:
        async with (
            running_edge(edge_settings, tmp_path) as edge,
            btc_minutes(edge.target, 0, timeout=120) as stream,
        ):
            assert await edge.metric("cryptopredict_edge_kafka_connected") == 1
            await proxy.cut()
            await wait_until_metric(edge, "cryptopredict_edge_kafka_connected", 0, timeout=20)
            assert await edge_health(edge.target) == health_pb2.HealthCheckResponse.SERVING
            assert await edge.metric("cryptopredict_edge_kafka_errors_total") > 0
            await wait_until(lambda: "lost Kafka" in edge.log.read_text(), 5)  # logged within a second
            # Written while the edge cannot read it: the server has it, the stream waits, open, and new
            # streams are still admitted (with the predictions the edge holds).
            await topic.publish(make_prediction(minute=1))
            await until_served(server, make_prediction(minute=1))
            async with btc_minutes(edge.target, 0, timeout=30):
                pass
            assert stream.received == [0] and stream.open
            assert await get_latest_prediction(edge.target, "BTC/USD", 60, 60) == make_prediction(minute=1)
            await proxy.restore()
            await wait_until_metric(edge, "cryptopredict_edge_kafka_connected", 1, timeout=30)
            await topic.publish(make_prediction(minute=2))
            # No gap and nothing twice: the edge read on from where it was.
            await wait_until(lambda: len(stream.received) >= 3, 30)
            assert stream.received == [0, 1, 2] and stream.open
            assert await edge_health(edge.target) == health_pb2.HealthCheckResponse.SERVING
    finally:
        await proxy.cut()


async def test_a_deleted_and_recreated_topic_is_read_again_under_an_open_stream(
    run_settings: Settings, topic: Topic, server: RunningServer, tmp_path: Path
) -> None:
    """Deleted and created again, the predictions topic is another topic to Kafka (a new topic id), and so
    is the dead-letter topic: the edge takes each up again, so its open stream gets what is written to the
    new topic, and a record it refuses there becomes a letter on the new dead-letter topic."""
    kafka = run_settings.kafka
    dead_letters = topic_name(DEAD_LETTERS, kafka.topic_prefix)
    await topic.publish(make_prediction(minute=1))
    await topic.send(b"not json")  # a letter to the first dead-letter topic, so the edge has written there
    async with (
        running_edge(with_port(run_settings, server.port), tmp_path) as edge,
        btc_minutes(edge.target, 1, timeout=150) as stream,
    ):
        async with asyncio.timeout(20):
            while not await read_topic(kafka, dead_letters, 1):
                pass
        await delete_topics(kafka, [topic.name, dead_letters])
        async with asyncio.timeout(30):  # the server's consumer may create them again first
            while not {topic.name, dead_letters} <= await topic_names(kafka):
                await ensure_topics(kafka)
        await topic.publish(make_prediction(minute=2))
        refused = await topic.send(b"still not json")
        await wait_until(lambda: stream.received == [1, 2], 60)
        assert stream.open
        letters: list[DeadLetter] = []
        async with asyncio.timeout(60):
            while not letters:
                letters = [
                    DeadLetter.model_validate_json(v) for v in await read_topic(kafka, dead_letters, 1)
                ]
        assert [letter.raw for letter in letters] == ["still not json"]
        assert f"partition {refused.partition}, offset {refused.offset})" in letters[0].reason
        log = edge.log.read_text()
        assert f"topic {topic.name} was deleted" in log, log
        # Each partition's error is logged once in a while, not at every fetch.
        assert len(re.findall(r"fetching \S+: UNKNOWN_TOPIC_ID", log)) <= 2 * kafka.partitions, log
        assert await edge_health(edge.target) == health_pb2.HealthCheckResponse.SERVING


async def test_the_edge_serves_nobody_until_it_has_read_the_topic(
    run_settings: Settings, topic: Topic, server: RunningServer, tmp_path: Path
) -> None:
    """Until it has read the topic as far as it went at start, the edge is not SERVING and refuses new
    streams, so nobody gets a flood of old predictions (here: it cannot reach Kafka at first)."""
    history = [make_prediction(minute=m) for m in range(5)]
    await topic.publish(*history)
    await until_served(server, history[-1])
    proxy = KafkaProxy(run_settings.kafka.first_host_port)
    await proxy.start()
    through_proxy = run_settings.kafka.model_copy(update={"bootstrap_servers": proxy.address})
    await proxy.cut()  # the same port, refusing
    try:
        edge_settings = with_port(run_settings.model_copy(update={"kafka": through_proxy}), server.port)
        async with (
            running_edge(edge_settings, tmp_path, serving=False) as edge,
            grpc.aio.insecure_channel(edge.target) as channel,
        ):
            stub = pb_grpc.PredictionServiceStub(channel)
            request = pb.StreamPredictionsRequest(pairs=["BTC/USD"], interval_s=60)
            await wait_until_metric(edge, "cryptopredict_edge_upstream_serving", 1)
            assert await edge_health(edge.target) == health_pb2.HealthCheckResponse.NOT_SERVING
            assert await edge.metric("cryptopredict_edge_caught_up") == 0
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.StreamPredictions(request, timeout=10).read()
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "catching up" in (refused.value.details() or "")
            await proxy.restore()
            await wait_for_health(edge.target, True, 30)
            assert await edge.metric("cryptopredict_edge_caught_up") == 1
            # The latest of the key, not the history; then what comes next.
            call = stub.StreamPredictions(request, timeout=30)
            assert minute_of(await call.read()) == 4
            await topic.publish(make_prediction(minute=5))
            assert minute_of(await call.read()) == 5
            call.cancel()
    finally:
        await proxy.cut()


async def test_edge_reads_the_topic_over_sasl_ssl(tmp_path: Path) -> None:
    """The cluster profile's Kafka (three nodes on loopback, SASL_SSL with SCRAM-SHA-512, its own CA),
    started if it is not up, as tests/integration/test_kafka_cluster.py does; the shared single broker is
    not touched. A wrong password gets the edge nowhere."""
    cluster = load_profile_settings("cluster")
    await asyncio.to_thread(stack.up, cluster, only=["kafka"])
    kafka = isolated(cluster, "edge-cluster").kafka
    assert kafka.security_protocol == "SASL_SSL" and kafka.ssl_ca_file is not None
    settings = local_settings().model_copy(update={"kafka": kafka})
    try:
        async with (
            predictions_topic(kafka) as topic,
            start_server(local_settings(), PredictionHub(), consume=False, grace=0.5) as running,
        ):
            await topic.publish(make_prediction(minute=0))
            async with (
                running_edge(with_port(settings, running.port), tmp_path) as edge,
                grpc.aio.insecure_channel(edge.target) as channel,
            ):
                call = pb_grpc.PredictionServiceStub(channel).StreamPredictions(
                    pb.StreamPredictionsRequest(pairs=["BTC/USD"], interval_s=60), timeout=30
                )
                assert minute_of(await call.read()) == 0
                await topic.publish(make_prediction(minute=1))
                assert minute_of(await call.read()) == 1
                call.cancel()
            wrong = {KAFKA_PASSWORD_ENV: "not-the-password"}
            async with running_edge(
                with_port(settings, running.port), tmp_path, serving=False, env=wrong
            ) as refused:
                await asyncio.sleep(5)
                assert await edge_health(refused.target) == health_pb2.HealthCheckResponse.NOT_SERVING
                assert await refused.metric("cryptopredict_edge_caught_up") == 0
                assert "SASL_AUTHENTICATION_FAILED" in refused.log.read_text()
    finally:
        names = [t for t in await topic_names(kafka) if t.startswith(kafka.topic_prefix)]
        await delete_topics(kafka, names)  # the session's cleanup knows the single broker only
