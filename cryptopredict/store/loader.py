"""Bulk loading of candle files into the feature store, in idempotent batches with a progress bar."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

from rich.progress import Progress

from cryptopredict.models import Candle
from cryptopredict.settings import Settings
from cryptopredict.store.candles import async_engine, upsert_candles
from cryptopredict.store.migrate import migrate
from cryptopredict.store.ohlcvt import read_ohlcvt

BATCH = 2000


def batched(rows: Iterable[Candle], size: int) -> Iterator[list[Candle]]:
    iterator = iter(rows)
    while batch := list(islice(iterator, size)):
        yield batch


async def load_ohlcvt(settings: Settings, path: Path, pair: str, interval_s: int) -> int:
    """Loads the file as candles of `pair`, a market key (the pair itself on Kraken)."""
    migrate(settings.postgres)
    engine = async_engine(settings.postgres)
    written = 0
    try:
        with Progress(transient=True) as progress:
            task = progress.add_task(f"loading {path.name}", total=None)
            for batch in batched(read_ohlcvt(path, pair, interval_s), BATCH):
                written += await upsert_candles(engine, batch)
                progress.update(task, advance=len(batch))
    finally:
        await engine.dispose()
    return written
