"""Small client for the prediction API, used by the demo and the tests; returns domain `Prediction`s."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

import grpc

from cryptopredict.models.ml import Prediction
from cryptopredict.settings import GrpcSettings
from grpc_server.convert import prediction_from_proto
from grpc_server.pb import predictions_pb2 as pb
from grpc_server.pb import predictions_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

# `timeout` is a gRPC deadline rather than asyncio.timeout: it travels to the server with the call.


@dataclass(frozen=True)
class Credentials:
    """How a client reaches the server: TLS when a CA is given, a bearer token when one is given."""

    root_certificates: bytes | None = None  # PEM of the CA (or the self-signed certificate) to trust
    token: str | None = None

    @classmethod
    def from_settings(cls, grpc_settings: GrpcSettings) -> Credentials:
        ca_file = grpc_settings.client_ca_file
        token = grpc_settings.client_bearer_token
        return cls(
            root_certificates=ca_file.read_bytes() if ca_file else None,
            token=token.get_secret_value() if token else None,
        )

    def channel(self, target: str) -> grpc.aio.Channel:
        if self.root_certificates is None:
            return grpc.aio.insecure_channel(target)
        return grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(self.root_certificates))

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        # Per-call metadata rather than call credentials: those refuse to travel over plaintext, and a
        # token on a loopback plaintext server is a supported setup.
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


PLAINTEXT = Credentials()


async def watch_predictions(
    target: str,
    pairs: Sequence[str] = (),
    interval_s: int = 0,
    timeout: float | None = None,  # noqa: ASYNC109
    horizon_s: int = 0,
    credentials: Credentials = PLAINTEXT,
    exchange: str = "",
) -> AsyncGenerator[Prediction]:
    """The predictions of StreamPredictions as they arrive: the latest known ones first, then live ones.
    `pairs` are on `exchange` ("": Kraken, "*": every exchange). Ends quietly at the deadline `timeout`
    (None: never); any other RPC error is raised."""
    async with credentials.channel(target) as channel:
        request = pb.StreamPredictionsRequest(
            pairs=list(pairs), interval_s=interval_s, horizon_s=horizon_s, exchange=exchange
        )
        call = pb_grpc.PredictionServiceStub(channel).StreamPredictions(
            request,
            timeout=timeout,
            metadata=credentials.metadata,
        )
        try:
            async for response in call:
                yield prediction_from_proto(response.prediction)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
        finally:
            call.cancel()  # tells the server to unsubscribe now rather than at the deadline


async def stream_predictions(
    target: str,
    pairs: Sequence[str] = (),
    interval_s: int = 0,
    limit: int = 1,
    timeout: float = 10.0,  # noqa: ASYNC109
    horizon_s: int = 0,
    credentials: Credentials = PLAINTEXT,
    exchange: str = "",
) -> list[Prediction]:
    """Collect up to `limit` predictions from StreamPredictions, waiting at most `timeout` seconds.

    Returns what arrived when the deadline passes (possibly fewer than `limit`, logged); any other
    RPC error is raised as grpc.aio.AioRpcError.
    """
    received: list[Prediction] = []
    stream = watch_predictions(target, pairs, interval_s, timeout, horizon_s, credentials, exchange)
    try:
        async for prediction in stream:
            received.append(prediction)
            if len(received) >= limit:
                break
    finally:
        await stream.aclose()
    if len(received) < limit:
        logger.info("stream deadline after %d of %d predictions", len(received), limit)
    return received


async def get_latest_prediction(
    target: str,
    pair: str,
    interval_s: int,
    horizon_s: int = 0,
    timeout: float = 10.0,  # noqa: ASYNC109
    credentials: Credentials = PLAINTEXT,
    exchange: str = "",
) -> Prediction | None:
    """The latest prediction of a key (`pair` on `exchange`, "": Kraken), or None when the server has none
    yet (NOT_FOUND)."""
    request = pb.GetLatestPredictionRequest(
        pair=pair, interval_s=interval_s, horizon_s=horizon_s, exchange=exchange
    )
    async with credentials.channel(target) as channel:
        try:
            response = await pb_grpc.PredictionServiceStub(channel).GetLatestPrediction(
                request,
                timeout=timeout,
                metadata=credentials.metadata,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
    return prediction_from_proto(response.prediction)
