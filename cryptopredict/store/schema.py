"""Tables of the feature store. The streaming-features issue moves their creation into migrations."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Double,
    Integer,
    MetaData,
    Table,
    Text,
    func,
)

metadata = MetaData()

candles = Table(
    "candles",
    metadata,
    Column("pair", Text, primary_key=True),
    Column("interval_s", Integer, primary_key=True),
    Column("window_start", DateTime(timezone=True), primary_key=True),
    Column("window_end", DateTime(timezone=True), nullable=False),
    Column("open", Double, nullable=False),
    Column("high", Double, nullable=False),
    Column("low", Double, nullable=False),
    Column("close", Double, nullable=False),
    Column("volume", Double, nullable=False),
    Column("vwap", Double, nullable=False),
    Column("trade_count", Integer, nullable=False),
    Column("first_trade_id", BigInteger),
    Column("last_trade_id", BigInteger),
    Column("gap", Boolean, nullable=False),
    Column("written_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
