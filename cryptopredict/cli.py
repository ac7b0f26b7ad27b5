"""The `cryptopredict` command. Subcommands import heavy modules lazily so `--help` stays fast."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from cryptopredict.cli_stack import stack_app
from cryptopredict.settings import get_settings

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Real-time crypto forecasting: local stack, exchange replay, feed, Faust, training, gRPC.",
)
app.add_typer(stack_app, name="stack", help="Local stack of real services: up | status | down | logs | tools")

# The demo's replay starts here, so every demo run replays identical trades (and upserts identical candles).
DEMO_ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)


class UserError(Exception):
    """Needs a person: configuration or input is wrong (exit code 2)."""


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
def exchange(
    port: int = 8790,
    host: str = "127.0.0.1",
    trades_file: Annotated[
        Path | None, typer.Option(help="CSV of real trades: timestamp,time_ms,side,price,qty")
    ] = None,
    pair: str = "BTC/USD",
    minutes: int = 600,
    trades_per_minute: float = 20.0,
    speed: float = 600.0,
    seed: int = 7,
) -> None:
    """Run the replay exchange (Kraken WebSocket v2 protocol) until interrupted."""
    from cryptopredict.kraken.replay import ReplayExchange, csv_trades, synthetic_trades

    _logging("info")
    if trades_file is not None:
        trades = list(csv_trades(trades_file, pair))
    else:
        trades = list(synthetic_trades(pair, DEMO_ANCHOR, minutes, trades_per_minute, seed=seed))

    async def run() -> None:
        server = ReplayExchange(trades, speed=speed, host=host, port=port)
        await server.start()
        typer.echo(f"replay exchange at {server.url}", err=True)
        await asyncio.Event().wait()

    asyncio.run(run())


@app.command()
def feed(
    url: Annotated[str | None, typer.Option(help="WebSocket URL; default: settings.kraken.ws_url")] = None,
    rest_url: Annotated[
        str | None, typer.Option(help="REST base URL for gap fills; default: settings")
    ] = None,
) -> None:
    """Publish exchange trades to the `trades` topic until interrupted."""
    from streams.trade_feed import run_feed

    _logging("info")
    asyncio.run(run_feed(get_settings(), url, rest_url=rest_url))


@app.command()
def record(
    out: Annotated[Path, typer.Argument(help="Parquet file to write")],
    url: Annotated[str | None, typer.Option(help="WebSocket URL; default: settings.kraken.ws_url")] = None,
    max_trades: Annotated[int | None, typer.Option(help="stop after this many trades")] = None,
) -> None:
    """Record live trades to Parquet; replay them with `exchange --source trades-file --file OUT`."""
    from cryptopredict.kraken.record import record_trades
    from streams.trade_feed import trade_client

    _logging("info")
    written = asyncio.run(record_trades(trade_client(get_settings(), url), out, max_trades))
    typer.echo(f"recorded {written} trades to {out}")


@app.command()
def backfill(
    pair: str = "BTC/USD",
    start: Annotated[datetime | None, typer.Option(help="UTC start of the trade history to fetch")] = None,
    end: Annotated[datetime | None, typer.Option(help="UTC end (exclusive); default: now")] = None,
    rest_url: Annotated[
        str | None, typer.Option(help="REST base URL; default: settings.kraken.rest_url")
    ] = None,
    from_csv: Annotated[
        Path | None, typer.Option(help="Kraken OHLCVT export to load straight into the store")
    ] = None,
    interval: Annotated[str, typer.Option(help="candle interval of --from-csv: 1m, 5m, 1h, 1d")] = "1h",
    wait: bool = True,
) -> None:
    """Backfill history: trades from Kraken REST through Temporal, or an OHLCVT file into the store."""
    settings = get_settings()
    if from_csv is not None:
        from cryptopredict.store.loader import load_ohlcvt

        rows = asyncio.run(load_ohlcvt(settings, from_csv, pair, parse_interval(interval)))
        typer.echo(f"loaded {rows} candles of {pair} from {from_csv}")
        return
    if start is None:
        raise UserError("--start is required unless --from-csv is given")
    from cryptopredict.models.backfill import BackfillInput
    from cryptopredict.orchestration import start_backfill

    request = BackfillInput(
        pair=pair,
        start=start.replace(tzinfo=start.tzinfo or UTC),
        end=(end or datetime.now(UTC)).replace(tzinfo=(end.tzinfo if end else None) or UTC),
        rest_url=rest_url,
    )
    result = asyncio.run(start_backfill(settings, request, wait=wait))
    typer.echo(result.model_dump_json(indent=2) if result is not None else "started")


def parse_interval(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return int(text[:-1]) * units[text[-1]]
    except (KeyError, ValueError) as exc:
        raise UserError(f"interval {text!r}: use a number and s, m, h or d, e.g. 1h") from exc


@app.command()
def stream(log_level: str = "info") -> None:
    """Run the Faust worker with every agent (candles, store sink, predictions)."""
    os.execv(sys.executable, [sys.executable, "-m", "streams", "worker", "-l", log_level])


@app.command()
def worker() -> None:
    """Run the Temporal worker for the training task queue."""
    from workflows.worker import run_worker

    _logging("info")
    asyncio.run(run_worker(get_settings()))


@app.command()
def train(pair: str = "BTC/USD", interval_s: int = 60, horizon_candles: int = 1, wait: bool = True) -> None:
    """Start a TrainingWorkflow (same as `temporal workflow start --type TrainingWorkflow ...`)."""
    from cryptopredict.models.training import TrainingInput
    from cryptopredict.orchestration import start_training

    settings = get_settings()
    request = TrainingInput(
        pair=pair,
        interval_s=interval_s,
        horizon_candles=horizon_candles,
        lags=settings.model.lags,
        test_fraction=settings.model.test_fraction,
    )
    result = asyncio.run(start_training(settings, request, wait=wait))
    typer.echo(result.model_dump_json(indent=2) if result is not None else "started")


@app.command()
def serve() -> None:
    """Run the gRPC prediction server."""
    os.execv(sys.executable, [sys.executable, "-m", "grpc_server"])


@app.command()
def demo(
    min_candles: int = 300,
    predictions: int = 20,
    timeout_s: float = 900.0,
) -> None:
    """The main job: stack up, replay trades, build candles, train via Temporal, stream predictions."""
    from cryptopredict.demo import run_demo

    _logging("warning")
    summary = asyncio.run(
        run_demo(get_settings(), min_candles=min_candles, predictions=predictions, timeout_s=timeout_s)
    )
    typer.echo(json.dumps(summary))


def main(argv: list[str] | None = None) -> int:
    try:
        app(args=argv, standalone_mode=False)
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except (ConnectionError, TimeoutError) as exc:
        typer.echo(f"error (try again when the service is back): {exc}", err=True)
        return 3
    except KeyboardInterrupt:
        return 130
    except SystemExit as exc:
        return int(exc.code or 0)
    except Exception as exc:  # click's own usage errors carry an exit code
        code = getattr(exc, "exit_code", None)
        if code is None:
            raise
        if hasattr(exc, "show"):
            exc.show()
        return int(code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
