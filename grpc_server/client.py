"""Small client for the prediction API, used by the demo and the tests; returns domain `Prediction`s."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Sequence

import grpc

from cryptopredict.models.ml import Prediction
from grpc_server.convert import prediction_from_proto
from grpc_server.pb import predictions_pb2 as pb
from grpc_server.pb import predictions_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

# `timeout` is a gRPC deadline rather than asyncio.timeout: it travels to the server with the call.


async def watch_predictions(
    target: str,
    pairs: Sequence[str] = (),
    interval_s: int = 0,
    timeout: float | None = None,  # noqa: ASYNC109
) -> AsyncGenerator[Prediction]:
    """The predictions of StreamPredictions as they arrive: the latest known ones first, then live ones.
    Ends quietly at the deadline `timeout` (None: never); any other RPC error is raised."""
    async with grpc.aio.insecure_channel(target) as channel:
        call = pb_grpc.PredictionServiceStub(channel).StreamPredictions(
            pb.StreamPredictionsRequest(pairs=list(pairs), interval_s=interval_s), timeout=timeout
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
) -> list[Prediction]:
    """Collect up to `limit` predictions from StreamPredictions, waiting at most `timeout` seconds.

    Returns what arrived when the deadline passes (possibly fewer than `limit`, logged); any other
    RPC error is raised as grpc.aio.AioRpcError.
    """
    received: list[Prediction] = []
    stream = watch_predictions(target, pairs, interval_s, timeout)
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
) -> Prediction | None:
    """The latest prediction of a key, or None when the server has none yet (NOT_FOUND)."""
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            response = await pb_grpc.PredictionServiceStub(channel).GetLatestPrediction(
                pb.GetLatestPredictionRequest(pair=pair, interval_s=interval_s, horizon_s=horizon_s),
                timeout=timeout,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
    return prediction_from_proto(response.prediction)
