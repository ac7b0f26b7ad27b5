"""The stream edge (infra/stream-edge, Go) in front of the real gRPC server: it serves StreamPredictions
from its own fan-out, as the server would, and relays everything else.

The server runs in this process with the hub fed directly (consume=False); the edge is the real binary,
built by the project's own Go tool installer, in a child process.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from test_grpc_server import (
    EDGE_PAIR,
    T0,
    local_settings,
    make_prediction,
    on_coinbase,
    two_venue_settings,
    wait_until,
    with_uncertainty,
)

from cryptopredict.cli.demo import free_port
from cryptopredict.kafka_client import client_kwargs
from cryptopredict.settings import MetricsSettings, Settings
from cryptopredict.stack.tools import edge_binary
from cryptopredict.tls import write_self_signed
from cryptopredict.topics import PREDICTIONS
from grpc_server.client import PLAINTEXT, Credentials, get_latest_prediction, stream_predictions
from grpc_server.convert import prediction_from_proto, prediction_response_bytes
from grpc_server.edge import edge_command
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


async def edge_serving(target: str, credentials: Credentials) -> bool:
    async with credentials.channel(target) as channel:
        try:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
        except grpc.aio.AioRpcError:
            return False
    return response.status == health_pb2.HealthCheckResponse.SERVING


async def wait_for_health(
    target: str,
    serving: bool,
    timeout: float,  # noqa: ASYNC109
    credentials: Credentials = PLAINTEXT,
) -> None:
    # Polling: health is the edge's own state, observable only by asking.
    async with asyncio.timeout(timeout):
        while await edge_serving(target, credentials) != serving:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_edge(settings: Settings, tmp_path: Path) -> AsyncIterator[Edge]:
    """The edge for `settings` (whose grpc.port is the running server's), serving once it follows it."""
    metrics_port = free_port()
    settings = settings.model_copy(
        update={
            "grpc": settings.grpc.model_copy(update={"edge_port": free_port()}),
            "metrics": MetricsSettings(host="127.0.0.1", edge_port=metrics_port),
        }
    )
    args, env = edge_command(settings, await asyncio.to_thread(edge_binary, settings))
    log = tmp_path / "edge.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(*args, env=env, stdout=out, stderr=subprocess.STDOUT)
    edge = Edge(
        process, f"127.0.0.1:{settings.grpc.edge_port}", f"http://127.0.0.1:{metrics_port}/metrics", log
    )
    try:
        await wait_for_health(edge.target, True, 30, Credentials.from_settings(settings.grpc))
        yield edge
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), 15)


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    async with start_server(local_settings(), PredictionHub(), consume=False, grace=0.5) as running:
        yield running


def with_port(settings: Settings, port: int) -> Settings:
    return settings.model_copy(update={"grpc": settings.grpc.model_copy(update={"port": port})})


def minute_of(response: pb.StreamPredictionsResponse) -> int:
    return int((response.prediction.feature_time.ToDatetime().timestamp() - T0.timestamp()) // 60)


async def test_edge_streams_the_latest_then_live_predictions(server: RunningServer, tmp_path: Path) -> None:
    hub = server.hub
    hub.publish(make_prediction("BTC/USD", minute=0))
    hub.publish(make_prediction("BTC/USD", minute=1))  # replaces minute 0 as the latest
    hub.publish(make_prediction("ETH/USD", minute=1))  # another pair: not requested
    hub.publish(make_prediction("BTC/USD", minute=1, interval_s=300))  # another interval
    async with running_edge(with_port(local_settings(), server.port), tmp_path) as edge:
        async with grpc.aio.insecure_channel(edge.target) as channel:
            call = pb_grpc.PredictionServiceStub(channel).StreamPredictions(
                pb.StreamPredictionsRequest(pairs=["BTC/USD"], interval_s=60), timeout=30
            )
            first = await call.read()  # the snapshot: the edge has subscribed this stream
            assert await edge.metric("cryptopredict_edge_subscribers") == 1
            for minute in (2, 3):
                hub.publish(make_prediction("ETH/USD", minute=minute))
                hub.publish(make_prediction("BTC/USD", minute=minute))
            received = [first, await call.read(), await call.read()]
            call.cancel()
        assert [prediction_from_proto(r.prediction) for r in received] == [
            make_prediction("BTC/USD", minute=m) for m in (1, 2, 3)
        ]
        # The whole stream, every pair and interval, through the edge as through the server.
        everything = await stream_predictions(edge.target, [], 0, limit=3, timeout=10)
        direct = await stream_predictions(f"127.0.0.1:{server.port}", [], 0, limit=3, timeout=10)
        # Predictions of the same candle and time may come in either order.
        assert sorted(everything, key=repr) == sorted(direct, key=repr)
        assert [p.feature_time for p in everything] == sorted(p.feature_time for p in everything)
        await wait_until(lambda: hub.subscriber_count == 1)  # the edge's own stream only


async def test_edge_refuses_what_the_server_refuses_with_its_status(
    server: RunningServer, tmp_path: Path
) -> None:
    async with running_edge(with_port(local_settings(), server.port), tmp_path) as edge:
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


async def test_edge_relays_every_other_method(server: RunningServer, tmp_path: Path) -> None:
    server.hub.publish(make_prediction("BTC/USD", minute=4))
    async with running_edge(with_port(local_settings(), server.port), tmp_path) as edge:
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
    server: RunningServer, tmp_path: Path
) -> None:
    hub = server.hub
    hub.publish(make_prediction("BTC/USD", minute=4))
    async with running_edge(with_port(local_settings(), server.port), tmp_path) as edge:
        # The first call goes to the server: the edge has not seen it accept this caller yet.
        assert await get_latest_prediction(edge.target, "BTC/USD", 60, 60) == make_prediction(
            "BTC/USD", minute=4
        )
        assert (await edge.metric(ANSWERED_UPSTREAM), await edge.metric(ANSWERED_BY_EDGE)) == (1, 0)
        assert await get_latest_prediction(edge.target, "BTC/USD", 60, 60) == make_prediction(
            "BTC/USD", minute=4
        )
        assert (await edge.metric(ANSWERED_UPSTREAM), await edge.metric(ANSWERED_BY_EDGE)) == (1, 1)
        # A new prediction replaces the edge's answer as soon as it has streamed through.
        hub.publish(make_prediction("BTC/USD", minute=5))
        await wait_until_latest(edge.target, make_prediction("BTC/USD", minute=5))
        # What the edge has no prediction of, and a zero horizon (the server's "newest of any"), go upstream.
        upstream = await edge.metric(ANSWERED_UPSTREAM)
        assert await get_latest_prediction(edge.target, "ETH/USD", 60, 60) is None
        assert await get_latest_prediction(edge.target, "BTC/USD", 60, 0) == make_prediction(
            "BTC/USD", minute=5
        )
        assert await edge.metric(ANSWERED_UPSTREAM) == upstream + 2


async def wait_until_metric(edge: Edge, name: str, value: float) -> None:
    # Polling: the edge's figures are its own state, observable only by asking.
    async with asyncio.timeout(10):
        while await edge.metric(name) != value:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def wait_until_latest(target: str, expected: object) -> None:
    # Polling: the edge's latest prediction changes as the upstream stream delivers, with no event to await.
    async with asyncio.timeout(10):
        while await get_latest_prediction(target, "BTC/USD", 60, 60) != expected:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_edge_passes_tokens_and_serves_tls(tmp_path: Path) -> None:
    cert, key = write_self_signed(tmp_path)
    settings = local_settings(tokens=[TOKEN], tls_cert_file=str(cert), tls_key_file=str(key))
    async with start_server(settings, PredictionHub(), consume=False, grace=0.5) as running:
        running.hub.publish(make_prediction())
        settings = with_port(settings, running.port)
        async with running_edge(settings, tmp_path) as edge:  # follows the server with the token, over TLS
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
    server: RunningServer, tmp_path: Path
) -> None:
    hub = server.hub
    hub.publish(make_prediction(minute=0))
    async with running_edge(with_port(local_settings(), server.port), tmp_path) as edge:
        async with (
            # No BDP probing: the slow client's HTTP/2 window stays at 64 KiB instead of growing to MiBs.
            grpc.aio.insecure_channel(edge.target, options=[("grpc.http2.bdp_probe", 0)]) as slow_channel,
            grpc.aio.insecure_channel(edge.target) as fast_channel,
        ):
            request = pb.StreamPredictionsRequest(pairs=["BTC/USD"], interval_s=60)
            slow = pb_grpc.PredictionServiceStub(slow_channel).StreamPredictions(request, timeout=30)
            fast = pb_grpc.PredictionServiceStub(fast_channel).StreamPredictions(request, timeout=30)
            assert minute_of(await slow.read()) == 0  # subscribed; it reads nothing more until the end
            assert minute_of(await fast.read()) == 0
            last = 4000  # far more than the slow stream's queue and HTTP/2 window hold
            fast_minutes: list[int] = []

            async def read_fast() -> None:
                while not fast_minutes or fast_minutes[-1] < last:
                    fast_minutes.append(minute_of(await fast.read()))

            reader = asyncio.create_task(read_fast())
            for minute in range(1, last + 1):
                hub.publish(make_prediction(minute=minute))
                if minute % 10 == 0:
                    await asyncio.sleep(0.005)  # let the server's stream to the edge keep up
            await asyncio.wait_for(reader, 30)
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


async def test_edge_drains_streams_at_shutdown(server: RunningServer, tmp_path: Path) -> None:
    server.hub.publish(make_prediction())
    async with running_edge(with_port(local_settings(), server.port), tmp_path) as edge:
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


async def test_edge_follows_the_server_again_after_it_restarts(tmp_path: Path) -> None:
    settings = local_settings(port=free_port())
    async with contextlib.AsyncExitStack() as first_server:
        first = await first_server.enter_async_context(
            start_server(settings, PredictionHub(), consume=False, grace=0.5)
        )
        first.hub.publish(make_prediction(minute=0))
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
            async with start_server(settings, PredictionHub(), consume=False, grace=0.5) as second:
                await wait_for_health(edge.target, True, 45)
                after = stub.StreamPredictions(request, timeout=60)
                await wait_until_metric(edge, "cryptopredict_edge_subscribers", 1)
                second.hub.publish(make_prediction(minute=9))
                # The first server's prediction is forgotten: the new stream starts with the second's.
                assert minute_of(await after.read()) == 9
                after.cancel()
                # And lookups go to the new server first, whatever the edge knew before.
                upstream = await edge.metric(ANSWERED_UPSTREAM)
                assert await get_latest_prediction(edge.target, "BTC/USD", 60, 60) == make_prediction(
                    minute=9
                )
                assert await edge.metric(ANSWERED_UPSTREAM) == upstream + 1
            assert edge.process.returncode is None


async def test_the_uncertainty_fields_reach_an_edge_subscriber_from_the_topic_unchanged(
    tmp_path: Path,
) -> None:
    """Topic `predictions` (JSON) -> the server's consumer and hub -> the edge -> a subscriber: the
    subscriber gets the bytes the server encodes, and they decode to the prediction that was produced."""
    settings = local_settings()
    pair = EDGE_PAIR  # of this run only: the topic holds the predictions of earlier runs too
    # Interval level, quantiles, volatility and regime; then none of them (absent stays absent); then again.
    produced = [
        with_uncertainty(make_prediction(pair, minute=1)),
        make_prediction(pair, minute=2),
        with_uncertainty(make_prediction(pair, minute=3)),
    ]
    producer = AIOKafkaProducer(**client_kwargs(settings.kafka))
    await producer.start()
    try:
        async with (
            start_server(settings, PredictionHub(), consume=True, grace=0.5) as running,
            running_edge(with_port(settings, running.port), tmp_path) as edge,
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
            for prediction in produced:
                await producer.send_and_wait(PREDICTIONS, prediction.to_json_bytes(), key=pair.encode())
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
            key = pb.GetLatestPredictionRequest(pair=pair, interval_s=60, horizon_s=60)
            answers = [await lookup(key, timeout=10) for _ in range(2)]
            assert answers == [prediction_response_bytes(produced[-1])] * 2
            assert (await edge.metric(ANSWERED_UPSTREAM), await edge.metric(ANSWERED_BY_EDGE)) == (1, 1)
    finally:
        await producer.stop()


async def test_edge_leaves_quantile_selection_and_targets_to_the_server(
    server: RunningServer, tmp_path: Path
) -> None:
    prediction = with_uncertainty(make_prediction("BTC/USD", minute=6))
    server.hub.publish(prediction)
    key = {"pair": "BTC/USD", "interval_s": 60, "horizon_s": 60}
    async with (
        running_edge(with_port(local_settings(), server.port), tmp_path) as edge,
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
    server: RunningServer, tmp_path: Path
) -> None:
    """The edge holds its subscribers' streams, so it bounds them per caller itself; the server (loopback
    exempt by default) admits a burst of subscribers through the edge beyond its own bound."""
    server.hub.publish(make_prediction("BTC/USD", minute=0))
    bounded = local_settings(max_streams_per_caller=2, stream_limit_exempt_hosts=[])
    request = pb.StreamPredictionsRequest(pairs=["BTC/USD"], interval_s=60)
    async with running_edge(with_port(bounded, server.port), tmp_path) as edge:
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
            await wait_for_metric(edge, "cryptopredict_edge_subscribers", 1)
            replacement = stub.StreamPredictions(request, timeout=30)
            await replacement.read()
            for call in (calls[1], replacement):
                call.cancel()
    server_bound = server.slots.limit  # the server's default bound, which the edge's admissions exceed
    async with running_edge(with_port(local_settings(), server.port), tmp_path) as edge:
        async with grpc.aio.insecure_channel(edge.target) as channel:
            stub = pb_grpc.PredictionServiceStub(channel)
            burst = [stub.StreamPredictions(request, timeout=30) for _ in range(3 * server_bound)]
            await asyncio.gather(*(call.read() for call in burst))
            for call in burst:
                call.cancel()


async def wait_for_metric(edge: Edge, name: str, value: float) -> None:
    async with asyncio.timeout(10):
        while await edge.metric(name) != value:  # noqa: ASYNC110 - the edge's state, seen by asking
            await asyncio.sleep(0.05)


async def test_edge_keeps_exchanges_apart_and_none_means_kraken(tmp_path: Path) -> None:
    settings = two_venue_settings()
    async with start_server(settings, PredictionHub(), consume=False, grace=0.5) as running:
        hub = running.hub
        kraken = [make_prediction(minute=m) for m in (1, 4)]
        coinbase = [on_coinbase(make_prediction(minute=m)) for m in (2, 3)]
        hub.publish(kraken[0])
        hub.publish(coinbase[0])
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
            hub.publish(coinbase[1])
            hub.publish(kraken[1])
            unnamed, coinbase_only, every = await asyncio.gather(*streams)
            assert unnamed == kraken and coinbase_only == coinbase
            assert every == [kraken[0], coinbase[0], coinbase[1], kraken[1]]
            # Lookups by exchange: the server answers each key first, then the edge does.
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
