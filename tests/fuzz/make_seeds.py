"""Writes the seed corpora under corpus/<target>/ from the project's own producers of each input: the
protocol's and the replay exchange's messages, the REST answers the replay exchange serves, the pages and
feeds of the local news server, and requests like the README's. Run it again after changing a producer:
`.venv/bin/python tests/fuzz/make_seeds.py`. Regression inputs (regression-*) are kept as they are."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from google.protobuf.timestamp_pb2 import Timestamp

from cryptopredict.kraken.protocol import format_timestamp, subscribe_request, trade_message
from cryptopredict.kraken.rest import ohlc_response, to_ns, trades_response
from cryptopredict.models import Trade
from cryptopredict.simulators.exchange import malformed_message, result_key
from cryptopredict.simulators.news import NewsServer, sample_news_items
from cryptopredict.venue_rest import OhlcRow
from grpc_server.pb import predictions_pb2 as pb

CORPUS = Path(__file__).resolve().parent / "corpus"
START = datetime(2026, 1, 1, tzinfo=UTC)


def _trades(pair: str, count: int, first_id: int = 1) -> list[Trade]:
    return [
        Trade(
            pair=pair,
            trade_id=first_id + i,
            price=42_000.5 + i * 0.25,
            qty=0.001 * (i + 1),
            side="buy" if i % 2 else "sell",
            ord_type="market" if i % 3 else "limit",
            timestamp=START + timedelta(milliseconds=250 * i),
            ingested_at=START,
        )
        for i in range(count)
    ]


def kraken_ws() -> list[bytes]:
    btc, eth = _trades("BTC/USD", 3), _trades("ETH/USD", 2, first_id=100)
    ack = {"method": "subscribe", "req_id": 1, "time_in": format_timestamp(START)}
    messages = [
        trade_message("snapshot", btc),
        trade_message("update", btc[:1]),
        trade_message("update", eth),
        subscribe_request(["BTC/USD", "ETH/USD"]),
        '{"channel":"heartbeat"}',
        json.dumps(
            {"channel": "status", "type": "update", "data": [{"system": "online", "api_version": "v2"}]}
        ),
        json.dumps(
            ack | {"success": True, "result": {"channel": "trade", "symbol": "BTC/USD", "snapshot": True}}
        ),
        json.dumps(
            ack | {"success": False, "error": "Currency pair not supported XYZ/USD", "symbol": "XYZ/USD"}
        ),
        *(
            malformed_message(kind, btc[0])
            for kind in ("non_numeric_price", "missing_field", "future_timestamp")
        ),
    ]
    return [m.encode() for m in messages]


def kraken_rest() -> list[bytes]:
    trades = _trades("BTC/USD", 3)
    rows = [OhlcRow(1_767_225_600 + 60 * i, 100.0, 101.5, 99.25, 100.5, 100.2, 3.5, 7) for i in range(2)]
    payloads = [
        trades_response(result_key("BTC/USD"), trades, to_ns(trades[-1].timestamp)),
        trades_response(result_key("BTC/USD"), [], to_ns(START)),
        ohlc_response(result_key("BTC/USD"), rows, rows[0].time),
        {"error": ["EQuery:Unknown asset pair"]},
    ]
    return [json.dumps(p).encode() for p in payloads]


async def _news_pages() -> tuple[list[bytes], list[bytes]]:
    async with NewsServer(sample_news_items(4), page_size=2) as server, httpx.AsyncClient() as client:
        token = {"auth_token": server.auth_token}
        pages = [(await client.get(url, params=token)).content for url in (server.v1_url, server.v2_url)]
        feeds = [
            (await client.get(url)).content for url in (server.rss_url("coindesk"), server.atom_url("all"))
        ]
    return pages, feeds


def grpc_requests() -> list[bytes]:
    since = Timestamp()
    since.FromDatetime(START)
    requests = [
        pb.StreamPredictionsRequest(pairs=["BTC/USD"], interval_s=60, horizon_s=60),
        pb.GetLatestPredictionRequest(
            pair="BTC/USD", interval_s=60, horizon_s=60, quantile_levels=[0.1, 0.9]
        ),
        pb.GetLedgerRequest(pair="BTC/USD", interval_s=60, since=since),
        pb.ListModelsRequest(pairs=["BTC/USD", "ETH/USD"]),
        pb.GetModelRequest(pair="ETH/USD", interval_s=60, horizon_s=300, target="price"),
    ]
    # The harness picks the RPC from the first byte, in the order of grpc_invariants.METHODS.
    return [bytes([index]) + request.SerializeToString() for index, request in enumerate(requests)]


def write(target: str, seeds: list[bytes]) -> None:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("seed-*"):
        old.unlink()
    for seed in seeds:
        (folder / f"seed-{hashlib.sha1(seed).hexdigest()[:12]}").write_bytes(seed)


def main() -> None:
    pages, feeds = asyncio.run(_news_pages())
    write("kraken_ws", kraken_ws())
    write("kraken_rest", kraken_rest())
    write("news_cryptopanic", pages)
    write("news_feed", feeds)
    write("grpc_requests", grpc_requests())


if __name__ == "__main__":
    main()
