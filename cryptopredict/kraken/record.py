"""Recording live trades to Parquet, so that a real session can be replayed by the replay exchange.

The file holds the Trade model's fields, one row per trade, written in row groups as trades arrive.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from cryptopredict.feed_client import Rejected
from cryptopredict.models import Trade

logger = logging.getLogger(__name__)


class TradeSource(Protocol):
    """Any venue's trade client (Kraken, Coinbase, Binance)."""

    def batches(self) -> AsyncIterator[list[Trade | Rejected]]: ...


SCHEMA = pa.schema(
    [
        ("exchange", pa.string()),
        ("pair", pa.string()),
        ("trade_id", pa.int64()),
        ("price", pa.float64()),
        ("qty", pa.float64()),
        ("side", pa.string()),
        ("ord_type", pa.string()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("ingested_at", pa.timestamp("us", tz="UTC")),
    ]
)


def _table(trades: list[Trade]) -> pa.Table:
    return pa.Table.from_pylist([t.model_dump() for t in trades], schema=SCHEMA)


async def record_trades(
    client: TradeSource, path: Path, max_trades: int | None = None, row_group: int = 1000
) -> int:
    """Writes trades until cancelled or `max_trades`; returns how many were written."""
    written, buffer = 0, []
    with pq.ParquetWriter(path, SCHEMA) as writer:
        try:
            async for batch in client.batches():
                for event in batch:
                    if isinstance(event, Rejected):
                        logger.warning("not recorded: %s", event.reason)
                        continue
                    buffer.append(event)
                    if len(buffer) >= row_group:
                        writer.write_table(_table(buffer))
                        written, buffer = written + len(buffer), []
                    if max_trades is not None and written + len(buffer) >= max_trades:
                        break
                if max_trades is not None and written + len(buffer) >= max_trades:
                    break
        finally:
            if buffer:
                writer.write_table(_table(buffer))
                written += len(buffer)
    return written
