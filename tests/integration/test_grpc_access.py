"""Who may call the real gRPC server and how it treats its clients: bearer tokens, TLS, a slow client
beside a fast one, and the drain of streams at shutdown."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from scrape import scrape
from test_grpc_server import local_settings, make_prediction, wait_until

from cryptopredict.metrics import serve_metrics
from cryptopredict.tls import write_self_signed
from grpc_server.client import Credentials, get_latest_prediction, stream_predictions
from grpc_server.hub import PredictionHub
from grpc_server.pb import predictions_pb2 as pb
from grpc_server.pb import predictions_pb2_grpc as pb_grpc
from grpc_server.server import SERVICE_NAME, start_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TOKEN = "s3cret-token"
LATEST = pb.GetLatestPredictionRequest(pair="BTC/USD", interval_s=60, horizon_s=60)


async def status_of_latest(target: str, credentials: Credentials) -> grpc.StatusCode:
    async with credentials.channel(target) as channel:
        try:
            await pb_grpc.PredictionServiceStub(channel).GetLatestPrediction(
                LATEST, metadata=credentials.metadata, timeout=10
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def test_bearer_tokens_guard_every_rpc_but_health() -> None:
    settings = local_settings(tokens=[TOKEN, "second-token"])
    async with start_server(settings, PredictionHub(), consume=False, grace=0.5) as running:
        running.hub.publish(make_prediction())
        target = f"127.0.0.1:{running.port}"
        assert await status_of_latest(target, Credentials()) == grpc.StatusCode.UNAUTHENTICATED
        assert await status_of_latest(target, Credentials(token="wrong")) == grpc.StatusCode.UNAUTHENTICATED
        assert await status_of_latest(target, Credentials(token=TOKEN)) == grpc.StatusCode.OK
        assert await status_of_latest(target, Credentials(token="second-token")) == grpc.StatusCode.OK
        # Streams too: the refusal arrives as the stream's status, before any prediction.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stream_predictions(target, ["BTC/USD"], 60, limit=1, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "bearer token" in refused.value.details()
        streamed = await stream_predictions(
            target, ["BTC/USD"], 60, limit=1, timeout=10, credentials=Credentials(token=TOKEN)
        )
        assert streamed == [make_prediction()]
        # Probes and reflection need no token.
        async with grpc.aio.insecure_channel(target) as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
            services = [s.name async for r in reflection for s in r.list_services_response.service]
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert SERVICE_NAME in services
        assert running.auth is not None and running.auth.rejected == 3


async def test_without_tokens_no_authentication_is_asked() -> None:
    async with start_server(local_settings(), PredictionHub(), consume=False, grace=0.5) as running:
        assert running.auth is None
        status = await status_of_latest(f"127.0.0.1:{running.port}", Credentials(token="anything"))
        assert status == grpc.StatusCode.NOT_FOUND  # served (nothing published yet), not refused


async def test_tls_server_serves_verified_clients_only(tmp_path: Path) -> None:
    cert, key = write_self_signed(tmp_path)
    settings = local_settings(tls_cert_file=str(cert), tls_key_file=str(key), tokens=[TOKEN])
    async with start_server(settings, PredictionHub(), consume=False, grace=0.5) as running:
        running.hub.publish(make_prediction())
        target = f"127.0.0.1:{running.port}"
        # Our own clients read the CA (the self-signed certificate) and the token from the same settings.
        trusted = Credentials.from_settings(settings.grpc)
        assert trusted.root_certificates == cert.read_bytes() and trusted.token == TOKEN
        assert (
            await get_latest_prediction(target, "BTC/USD", 60, 60, credentials=trusted) == make_prediction()
        )
        # Plaintext against a TLS port cannot even connect.
        assert await status_of_latest(target, Credentials(token=TOKEN)) == grpc.StatusCode.UNAVAILABLE
        # A client trusting another certificate refuses the server's.
        other_cert, _ = write_self_signed(tmp_path / "other")
        stranger = Credentials(root_certificates=other_cert.read_bytes(), token=TOKEN)
        assert await status_of_latest(target, stranger) == grpc.StatusCode.UNAVAILABLE
        # TLS does not replace the token.
        untokened = Credentials(root_certificates=cert.read_bytes())
        assert await status_of_latest(target, untokened) == grpc.StatusCode.UNAUTHENTICATED


async def test_a_slow_client_does_not_delay_a_fast_one() -> None:
    hub = PredictionHub(queue_size=16)
    published = 5000
    async with (
        start_server(local_settings(), hub, consume=False, grace=0.5) as running,
        # Without BDP probing the stream's HTTP/2 window stays at 64 KiB (about 500 predictions): past that
        # the server cannot write to the client that does not read, and its hub queue must take the strain.
        grpc.aio.insecure_channel(
            f"127.0.0.1:{running.port}", options=[("grpc.http2.bdp_probe", 0)]
        ) as slow_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as fast_channel,
    ):
        request = pb.StreamPredictionsRequest(pairs=["BTC/USD"], interval_s=60)
        slow = pb_grpc.PredictionServiceStub(slow_channel).StreamPredictions(request)
        fast = pb_grpc.PredictionServiceStub(fast_channel).StreamPredictions(request)
        await wait_until(lambda: hub.subscriber_count == 2)
        # The slow client never reads.

        received: list[int] = []

        async def read_fast() -> None:
            while len(received) < published:
                response = await fast.read()
                received.append(response.prediction.feature_time.seconds)

        reader = asyncio.create_task(read_fast())
        burst = hub.queue_size // 2
        for start in range(0, published, burst):
            for minute in range(start, min(start + burst, published)):
                hub.publish(make_prediction(minute=minute))
            # The fast client catches up after every burst while the slow one sits still; were the
            # server waiting on the slow client, this would time out.
            done = min(start + burst, published)
            await wait_until(lambda done=done: len(received) >= done, timeout=10)  # type: ignore[misc]
        await asyncio.wait_for(reader, 10)

        assert received == sorted(received) and len(set(received)) == published  # all of them, in order
        dropping = [s for s in hub._subscriptions if s.dropped]
        assert len(dropping) == 1, "the slow client's subscription, and only it, drops predictions"
        slow_subscription = dropping[0]
        # The slow client lost its oldest predictions (counted) and its queue never grew past the bound.
        assert slow_subscription.dropped > 0 and hub.dropped == slow_subscription.dropped
        assert slow_subscription.queue.qsize() <= hub.queue_size
        slow.cancel()
        fast.cancel()


async def test_shutdown_drains_streams_then_ends_them_with_unavailable() -> None:
    hub = PredictionHub()
    async with start_server(local_settings(), hub, consume=False, grace=5.0) as running:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        call = pb_grpc.PredictionServiceStub(channel).StreamPredictions(pb.StreamPredictionsRequest())
        await wait_until(lambda: hub.subscriber_count == 1)
        for minute in range(5):
            hub.publish(make_prediction(minute=minute))
        # Leaving the block stops the server while five predictions are still queued for the stream.
    minutes = []
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        async for response in call:
            minutes.append(response.prediction.feature_time.seconds)
    await channel.close()
    assert len(minutes) == 5 and minutes == sorted(minutes)
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in ended.value.details()


async def test_metrics_endpoint_reports_calls_streams_and_drops() -> None:
    port = serve_metrics("127.0.0.1", 0)
    assert port is not None
    hub = PredictionHub(queue_size=2)
    async with start_server(local_settings(), hub, consume=False, grace=0.5) as running:
        target = f"127.0.0.1:{running.port}"
        assert await status_of_latest(target, Credentials()) == grpc.StatusCode.NOT_FOUND
        async with grpc.aio.insecure_channel(target) as channel:
            call = pb_grpc.PredictionServiceStub(channel).StreamPredictions(pb.StreamPredictionsRequest())
            await wait_until(lambda: hub.subscriber_count == 1)
            scraped = await scrape(port)
            assert scraped["cryptopredict_grpc_active_streams"] >= 1
            for minute in range(5):  # one synchronous burst into a queue of two: three dropped
                hub.publish(make_prediction(minute=minute))
            call.cancel()
            await wait_until(lambda: hub.subscriber_count == 0)
    scraped = await scrape(port)
    method = "/cryptopredict.v1.PredictionService/GetLatestPrediction"
    assert (
        scraped[f'cryptopredict_grpc_request_duration_seconds_count{{code="NOT_FOUND",method="{method}"}}']
        >= 1
    )
    assert scraped["cryptopredict_grpc_dropped_predictions_total"] >= 3
    assert scraped['cryptopredict_grpc_streams_total{code="CANCELLED"}'] >= 1


async def open_stream(channel: grpc.aio.Channel, token: str | None = None) -> grpc.aio.UnaryStreamCall:
    """A StreamPredictions call once the server has answered it: accepted (headers) or refused (status)."""
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    call = pb_grpc.PredictionServiceStub(channel).StreamPredictions(
        pb.StreamPredictionsRequest(pairs=["BTC/USD"], interval_s=60), metadata=metadata
    )
    await call.initial_metadata()
    return call


async def assert_refused(call: grpc.aio.UnaryStreamCall, limit: int) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call.read()
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"has {limit} prediction streams open" in refused.value.details()
    assert "grpc.max_streams_per_caller" in refused.value.details()


async def test_streams_per_caller_are_bounded_and_a_closed_one_frees_its_slot() -> None:
    port = serve_metrics("127.0.0.1", 0)
    assert port is not None
    settings = local_settings(max_streams_per_caller=3, stream_limit_exempt_hosts=[])
    async with start_server(settings, PredictionHub(), consume=False, grace=0.5) as running:
        running.hub.publish(make_prediction())
        # Each stream on a channel of its own: separate connections (other ports) are the same caller.
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") for _ in range(5)]
        try:
            calls = [await open_stream(channel) for channel in channels[:3]]
            for call in calls:  # accepted and delivering
                assert (await call.read()).prediction.pair == "BTC/USD"
            assert running.slots.open == {"127.0.0.1": 3}
            await assert_refused(await open_stream(channels[3]), 3)
            assert running.slots.open == {"127.0.0.1": 3}  # a refusal holds no slot
            calls[0].cancel()  # a client going away frees its slot
            await wait_until(lambda: running.slots.open == {"127.0.0.1": 2})
            replacement = await open_stream(channels[4])
            assert (await replacement.read()).prediction.pair == "BTC/USD"
            assert running.slots.open == {"127.0.0.1": 3}
            await assert_refused(await open_stream(channels[0]), 3)
        finally:
            for channel in channels:
                await channel.close()
        await wait_until(lambda: running.slots.open == {})
    scraped = await scrape(port)
    assert scraped['cryptopredict_grpc_streams_total{code="RESOURCE_EXHAUSTED"}'] >= 2


async def test_with_tokens_each_token_is_a_caller_and_exempt_hosts_are_not_bounded() -> None:
    settings = local_settings(
        tokens=[TOKEN, "second-token"], max_streams_per_caller=1, stream_limit_exempt_hosts=[]
    )
    async with start_server(settings, PredictionHub(), consume=False, grace=0.5) as running:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            first = await open_stream(channel, TOKEN)
            await assert_refused(await open_stream(channel, TOKEN), 1)
            second = await open_stream(channel, "second-token")  # same address, another caller
            assert running.slots.open == {"token #1": 1, "token #2": 1}
            first.cancel()
            second.cancel()
            await wait_until(lambda: running.slots.open == {})
    # Loopback is exempt by default (the stream edge beside the server admits its subscribers through it).
    async with start_server(
        local_settings(max_streams_per_caller=1), PredictionHub(), consume=False
    ) as running:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            calls = [await open_stream(channel) for _ in range(3)]
            assert running.slots.open == {"127.0.0.1": 3}
            for call in calls:
                call.cancel()
            await wait_until(lambda: running.slots.open == {})
