"""The `cryptopredict` command. Subcommands import heavy modules lazily so `--help` stays fast."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError

from cryptopredict.cli.stack import stack_app
from cryptopredict.settings import get_settings, validation_error_line

if TYPE_CHECKING:
    from cryptopredict.models import Prediction

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
    venue: Annotated[
        str, typer.Option(help="kraken | coinbase | binance: the exchange whose protocol the replay speaks")
    ] = "kraken",
    port: int = 8790,
    host: str = "127.0.0.1",
    source: Annotated[
        str | None,
        typer.Option(help="synthetic | trades-file | ohlcvt (default: trades-file if given, else synthetic)"),
    ] = None,
    file: Annotated[
        Path | None, typer.Option(help="Trades CSV/Parquet, or Kraken OHLCVT CSV (XBTUSD_60.csv)")
    ] = None,
    trades_file: Annotated[
        Path | None, typer.Option(help="CSV of real trades: timestamp,time_ms,side,price,qty")
    ] = None,
    pair: Annotated[
        str | None, typer.Option(help="Pair to replay; default: BTC/USD (BTC/USDT on Binance)")
    ] = None,
    pairs: Annotated[
        str | None, typer.Option(help="Comma list of pairs (synthetic); default: --pair")
    ] = None,
    minutes: int = 600,
    trades_per_minute: float = 20.0,
    speed: Annotated[
        str, typer.Option(help="Replay speed factor, or 'max' (as fast as clients read)")
    ] = "600",
    seed: int = 7,
    start: Annotated[str | None, typer.Option(help="OHLCVT: first candle (ISO date/time, UTC)")] = None,
    end: Annotated[
        str | None, typer.Option(help="OHLCVT: end of candles, exclusive (ISO date/time, UTC)")
    ] = None,
    drop_after: Annotated[int | None, typer.Option(help="Fault: close after K messages")] = None,
    drop_times: Annotated[int, typer.Option(help="Fault: ... on the first N connections")] = 1,
    stop_heartbeats: Annotated[bool, typer.Option(help="Fault: no heartbeats")] = False,
    silence_after: Annotated[int | None, typer.Option(help="Fault: go silent after K messages")] = None,
    silence_times: Annotated[int, typer.Option(help="Fault: ... on the first N connections")] = 1,
    malformed_every: Annotated[
        int | None, typer.Option(help="Fault: a bad message after every Nth update")
    ] = None,
    subscribe_error_pairs: Annotated[
        str, typer.Option(help="Fault: comma list of pairs whose subscribe fails")
    ] = "",
    maintenance_after: Annotated[int | None, typer.Option(help="Fault: maintenance after K updates")] = None,
    maintenance_s: Annotated[float, typer.Option(help="Fault: maintenance length, wall seconds")] = 5.0,
    rest_429_every: Annotated[int | None, typer.Option(help="Fault: every Nth REST request is a 429")] = None,
    rest_500_every: Annotated[int | None, typer.Option(help="Fault: every Nth REST request is a 500")] = None,
    skip_sequence_every: Annotated[
        int | None, typer.Option(help="Fault (coinbase): every Nth trade update of a connection is lost")
    ] = None,
) -> None:
    """Run the replay exchange (Kraken WebSocket v2 + REST Trades/OHLC on one port; --venue binance: Binance
    spot streams + REST historicalTrades/klines; --venue coinbase: Advanced Trade market_trades, heartbeats
    and status + REST market trades/candles) until interrupted."""
    from cryptopredict.kraken.sources import SOURCES, csv_trades, load_trades, synthetic_trades
    from cryptopredict.simulators import replay_exchange
    from cryptopredict.simulators.exchange import Faults, parse_speed

    _logging("info")
    try:
        server_class = replay_exchange(venue)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    default_pair: str = getattr(server_class, "default_pair", "BTC/USD")
    pair = pair or default_pair
    kind = source or ("trades-file" if (trades_file or file) else "synthetic")
    if kind not in SOURCES:
        raise typer.BadParameter(f"--source must be one of {', '.join(SOURCES)}")
    try:
        replay_speed = parse_speed(speed)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    pair_list = [p.strip() for p in (pairs or pair).split(",") if p.strip()]
    if kind == "trades-file" and trades_file is not None and file is None:
        trades = list(csv_trades(trades_file, pair))  # the original option, unchanged
    elif source is None and pairs is None:
        # Without --source or --pairs: the original random walk, so existing demos replay the same trades.
        trades = list(synthetic_trades(pair, DEMO_ANCHOR, minutes, trades_per_minute, seed=seed))
    else:
        trades = load_trades(
            kind,
            pair_list,
            file=file or trades_file,
            start=DEMO_ANCHOR,
            minutes=minutes,
            trades_per_minute=trades_per_minute,
            seed=seed,
            ohlcvt_start=datetime.fromisoformat(start).replace(tzinfo=UTC) if start else None,
            ohlcvt_end=datetime.fromisoformat(end).replace(tzinfo=UTC) if end else None,
        )
    faults = Faults(
        drop_after=drop_after,
        drop_times=drop_times,
        stop_heartbeats=stop_heartbeats,
        silence_after=silence_after,
        silence_times=silence_times,
        malformed_every=malformed_every,
        subscribe_error_pairs=frozenset(p.strip() for p in subscribe_error_pairs.split(",") if p.strip()),
        maintenance_after=maintenance_after,
        maintenance_s=maintenance_s,
        rest_429_every=rest_429_every,
        rest_500_every=rest_500_every,
    )
    if skip_sequence_every is not None:
        if venue != "coinbase":
            raise typer.BadParameter("--skip-sequence-every is a Coinbase fault: --venue coinbase")
        from cryptopredict.simulators.coinbase import CoinbaseFaults

        faults = CoinbaseFaults(**dataclasses.asdict(faults), skip_sequence_every=skip_sequence_every)

    async def run() -> None:
        server = server_class(trades, speed=replay_speed, host=host, port=port, faults=faults)
        await server.start()
        typer.echo(
            f"replay exchange at {server.url} (REST {server.rest_url}), {len(trades)} trades", err=True
        )
        await asyncio.Event().wait()

    asyncio.run(run())


@app.command()
def feed(
    venue: Annotated[
        str, typer.Option(help="kraken | coinbase | binance: the exchange this feed reads")
    ] = "kraken",
    url: Annotated[
        str | None, typer.Option(help="WebSocket URL; default: the venue's ws_url setting")
    ] = None,
    rest_url: Annotated[
        str | None, typer.Option(help="REST base URL for gap fills; default: settings")
    ] = None,
) -> None:
    """Publish one exchange's trades to the `trades` topic until interrupted (one process per venue)."""
    from cryptopredict.metrics import serve_metrics
    from streams.trade_feed import run_feed

    _logging("info")
    settings = get_settings()
    _check_venue(venue)
    serve_metrics(settings.metrics.host, settings.metrics.feed_metrics_port(venue))
    asyncio.run(run_feed(settings, url, rest_url=rest_url, venue=venue))


def _check_venue(venue: str) -> None:
    from cryptopredict.topics import EXCHANGES

    if venue not in EXCHANGES:
        raise typer.BadParameter(f"--venue must be one of {', '.join(EXCHANGES)}, not {venue!r}")


@app.command()
def record(
    out: Annotated[Path, typer.Argument(help="Parquet file to write")],
    venue: Annotated[str, typer.Option(help="kraken | coinbase | binance: the exchange recorded")] = "kraken",
    url: Annotated[
        str | None, typer.Option(help="WebSocket URL; default: the venue's ws_url setting")
    ] = None,
    max_trades: Annotated[int | None, typer.Option(help="stop after this many trades")] = None,
) -> None:
    """Record live trades to Parquet; replay them with `exchange [--venue V] --source trades-file --file OUT`."""
    from cryptopredict.kraken.record import record_trades
    from streams.trade_feed import trade_client

    _logging("info")
    _check_venue(venue)
    client = trade_client(get_settings(), url, venue=venue)
    written = asyncio.run(record_trades(client, out, max_trades))
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
def worker(
    queues: Annotated[
        str,
        typer.Option(
            help="comma list of the task queues to serve: training (training, drift, backfill), news"
            " (news ingest, sentiment workflows), llm (the LLM activity); each can run in processes of its own"
        ),
    ] = "training,news,llm",
    task_queue: Annotated[
        str | None, typer.Option(help="serve the training queue under this name (default from settings)")
    ] = None,
    schedules: Annotated[
        bool,
        typer.Option(
            help="at start, create or update the schedules of the served queues (retrain and drift:"
            " training; news-ingest: news)"
        ),
    ] = True,
) -> None:
    """Run the Temporal workers of the named task queues (default: all); serving llm, check the LLM endpoint
    first."""
    from workflows.worker import parse_queues, run_worker

    try:
        served = parse_queues(queues)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--queues") from exc
    _logging("info")
    settings = get_settings()
    asyncio.run(run_worker(settings, served, schedules=schedules, training_task_queue=task_queue))


@app.command("eval-sentiment")
def eval_sentiment(
    data: Annotated[Path, typer.Option("--data", exists=True, dir_okay=False, help="CSV with text,label")],
    limit: Annotated[int, typer.Option(help="seeded-random rows to score (0: all)")] = 200,
    seed: int = 0,
) -> None:
    """Measure the configured LLM on labelled headlines; ends with one JSON line of the figures."""
    from cryptopredict.sentiment.evaluation import evaluate, load_labelled
    from cryptopredict.sentiment.extractor import build_agent

    rows = load_labelled(data, limit=limit or None, seed=seed)
    figures = asyncio.run(evaluate(build_agent(get_settings().llm), rows))
    typer.echo(json.dumps(figures))


@app.command("ingest-news")
def ingest_news(wait: bool = True) -> None:
    """Run a NewsIngestWorkflow now (same as `temporal schedule trigger --schedule-id news-ingest`)."""
    import uuid

    from cryptopredict import workflow_types
    from cryptopredict.models.news_flow import NewsIngestResult
    from cryptopredict.orchestration import news_ingest_input, temporal_client

    async def run() -> NewsIngestResult | None:
        settings = get_settings()
        client = await temporal_client(settings)
        handle = await client.start_workflow(
            workflow_types.NEWS_INGEST,
            news_ingest_input(settings),
            id=f"news-ingest-manual-{uuid.uuid4().hex[:8]}",
            task_queue=settings.temporal.news_task_queue,
            result_type=NewsIngestResult,
        )
        return await handle.result() if wait else None

    result = asyncio.run(run())
    typer.echo(result.model_dump_json(indent=2) if result is not None else "started")


@app.command("news-server")
def news_server(port: int = 8792) -> None:
    """Serve sample news (CryptoPanic posts API and RSS/Atom) locally, for the demo and by-hand runs."""
    os.execv(sys.executable, [sys.executable, "-m", "cryptopredict.simulators.news", "--port", str(port)])


@app.command()
def train(
    pair: str = "BTC/USD",
    interval: Annotated[str, typer.Option(help="candle interval: 1m, 5m, 1h")] = "1m",
    horizon: Annotated[int, typer.Option(help="forecast horizon in candles")] = 1,
    trials: Annotated[int | None, typer.Option(help="Optuna trials per tuned family")] = None,
    wait: Annotated[bool, typer.Option(help="wait and print the decision as the last line")] = True,
    target: Annotated[
        str, typer.Option(help="what to forecast: price, or volatility (its own model and champion)")
    ] = "price",
) -> None:
    """Retrain (pair, interval, horizon) through Temporal: dataset -> screen -> tune -> evaluate -> gate.

    The same as `temporal workflow start --type TrainingWorkflow --task-queue training --input '{...}'`.
    """
    from cryptopredict.orchestration import start_training, training_request

    if target not in ("price", "volatility"):
        raise typer.BadParameter(f"target must be price or volatility, got {target!r}", param_hint="--target")
    settings = get_settings()
    extra = {"reason": "cli", "target": target} | ({"trials": trials} if trials else {})
    request = training_request(settings, pair, parse_interval(interval), horizon, **extra)
    result = asyncio.run(start_training(settings, request, wait=wait))
    if result is None:
        typer.echo("started")
        return
    typer.echo(result.model_dump_json(indent=2, exclude={"screened", "tuned"}), err=True)
    typer.echo(json.dumps(result.decision_line()))
    # The decision is out and nothing is left to clean up. Skipping interpreter finalization avoids a
    # native-thread abort at exit seen once in CI (PyGILState_Release in grpc's cygrpc), which would
    # turn a completed retrain into a failed command.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@app.command()
def watch(
    pair: Annotated[
        list[str] | None, typer.Option(help="pair to watch; repeat for more (default: all)")
    ] = None,
    interval: Annotated[str, typer.Option(help="candle interval: 1m, 5m, 1h")] = "1m",
    horizon: Annotated[int, typer.Option(help="forecast horizon in candles (0: every horizon)")] = 0,
    target: Annotated[str | None, typer.Option(help="gRPC server host:port (default from settings)")] = None,
    limit: Annotated[int, typer.Option(help="stop after this many predictions (0: never)")] = 0,
    exchange: Annotated[
        str, typer.Option(help="exchange of the pairs: kraken, coinbase, binance, or * for every one")
    ] = "kraken",
) -> None:
    """Print the prediction stream as a table: the latest prediction per pair first, then live ones.
    TLS and the bearer token come from the grpc settings (tls_ca_file or tls_cert_file, client_token)."""
    from grpc_server.client import Credentials, watch_predictions

    settings = get_settings()
    address = target or f"{settings.grpc.host}:{settings.grpc.port}"
    credentials = Credentials.from_settings(settings.grpc)

    async def run() -> None:
        typer.echo(WATCH_FORMAT.format(*WATCH_COLUMNS))
        seen = 0
        interval_s = parse_interval(interval)
        stream = watch_predictions(
            address,
            pair or [],
            interval_s,
            horizon_s=horizon * interval_s,
            credentials=credentials,
            exchange=exchange,
        )
        async for prediction in stream:
            typer.echo(WATCH_FORMAT.format(*watch_row(prediction)))
            seen += 1
            if limit and seen >= limit:
                break

    asyncio.run(run())


WATCH_COLUMNS = ("feature time", "pair", "last", "predicted", "interval", "target", "model")
WATCH_FORMAT = "{:<16}  {:<9}  {:>12}  {:>12}  {:>25}  {:<5}  {}"


def watch_row(p: Prediction) -> tuple[str, ...]:
    band = (
        "-"
        if p.lower_price is None or p.upper_price is None
        else f"{p.lower_price:,.2f}..{p.upper_price:,.2f}"
    )
    return (
        f"{p.feature_time:%Y-%m-%d %H:%M}",
        p.market,  # the pair alone on Kraken, `coinbase:BTC/USD` on another exchange
        f"{p.last_price:,.2f}",
        f"{p.predicted_price:,.2f}",
        band,
        f"{p.target_time:%H:%M}",
        f"{p.model_name} v{p.model_version}",
    )


@app.command()
def report(
    pair: str = "BTC/USD",
    interval: Annotated[str, typer.Option(help="candle interval: 1m, 5m, 1h")] = "1m",
    horizon: Annotated[int, typer.Option(help="forecast horizon in candles")] = 1,
    hours: Annotated[
        float, typer.Option(help="recent window, ending at the newest candle; drift compares the one before")
    ] = 24.0,
    window: Annotated[int, typer.Option(help="outcomes per point of the rolling MAE and skill")] = 60,
    until: Annotated[
        datetime | None, typer.Option(help="end of the range, UTC (default: the newest candle's end)")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="folder for the PNGs (default .local/reports/<pair>-<time>/)")
    ] = None,
) -> None:
    """PNG charts of one target from the feature store: realised price with the predictions and their
    interval per model version, rolling MAE and skill vs persistence, drift (PSI per model input) of the
    last `hours` against the window before. Prints each path, then a one-line summary of the ledger."""
    from sqlalchemy.exc import OperationalError

    from cryptopredict.ml import plots
    from cryptopredict.store.candles import sync_engine
    from cryptopredict.store.report import feature_psi, load_report

    if hours <= 0 or window < 1 or horizon < 1:
        raise UserError("--hours must be positive, --window and --horizon at least 1")
    settings = get_settings()
    interval_s = parse_interval(interval)

    def progress(message: str) -> None:
        typer.echo(f"... {message}", err=True)

    engine = sync_engine(settings.postgres)
    try:
        data = load_report(
            engine,
            pair,
            interval_s,
            horizon * interval_s,
            hours,
            settings.model.lags,
            progress,
            until=until.replace(tzinfo=until.tzinfo or UTC) if until else None,
            nominal_coverage=settings.model.interval_coverage,
        )
    except OperationalError as exc:
        raise ConnectionError(f"feature store: {exc.orig}") from exc
    finally:
        engine.dispose()
    if data is None:
        raise UserError(f"no candles of {pair} at {interval} in the feature store: nothing to report")
    psi, skipped = feature_psi(data.reference, data.recent, bins=settings.drift.psi_bins)
    stamp = f"{pair.replace('/', '').replace(':', '-')}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    folder = out or settings.local_dir / "reports" / stamp
    title = f"{pair} {interval} h{horizon}"
    progress(f"rendering charts into {folder}")
    drift = (data.reference, data.recent, psi) if psi else None
    figures = plots.ledger_figures(
        data.candles, data.outcomes, title, window, drift, psi_significant=settings.drift.psi_threshold
    )
    for name, figure in figures.items():
        typer.echo(plots.save_png(figure, folder / name))
    if skipped:
        typer.echo(skipped, err=True)
    span = f"{data.since:%Y-%m-%d %H:%M} .. {data.until:%Y-%m-%d %H:%M} UTC"
    typer.echo(f"{title} {span}: {data.summary.line()}")
    if not len(data.outcomes):
        hint = f"newest outcome at {data.newest_outcome:%Y-%m-%d %H:%M} UTC (see --until)"
        typer.echo(hint if data.newest_outcome else "no outcomes of this target yet", err=True)


@app.command()
def drift(
    pair: str = "BTC/USD",
    interval: Annotated[str, typer.Option(help="candle interval: 1m, 5m, 1h")] = "1m",
    horizon: Annotated[int, typer.Option(help="forecast horizon in candles")] = 1,
    retrain: Annotated[bool, typer.Option(help="a breach starts the target's retrain")] = True,
    wait: Annotated[bool, typer.Option(help="wait and print the report")] = True,
) -> None:
    """Run one drift check now through Temporal (DriftMonitorWorkflow, as the schedule does): PSI of each
    model input between the champion's training window and the recent window, the champion's live skill
    vs persistence; a breach starts the retrain. Prints the table, then the verdict as one JSON line."""
    from cryptopredict.models.drift import DriftMonitorInput
    from cryptopredict.orchestration import check_drift

    settings = get_settings()
    request = DriftMonitorInput(
        pair=pair, interval_s=parse_interval(interval), horizon_candles=horizon, retrain=retrain
    )
    result = asyncio.run(check_drift(settings, request, wait=wait))
    if result is None:
        typer.echo("started")
        return
    typer.echo(result.table())
    retrain_line = None if result.retrain is None else result.retrain.model_dump()
    typer.echo(
        json.dumps({"breached": result.breached, "breaches": result.breaches, "retrain": retrain_line})
    )


model_app = typer.Typer(no_args_is_help=True, help="Registered models: rollback")
app.add_typer(model_app, name="model")


@model_app.command()
def rollback(
    pair: str = "BTC/USD",
    interval: Annotated[str, typer.Option(help="candle interval: 1m, 5m, 1h")] = "1m",
    horizon: Annotated[int, typer.Option(help="forecast horizon in candles")] = 1,
    from_version: Annotated[
        str | None,
        typer.Option(help="the champion to roll back: run again, the command completes or changes nothing"),
    ] = None,
) -> None:
    """Move `champion` back to the version that held it before the current one (and tell the stream)."""
    from cryptopredict.model_events import rollback_champion

    settings = get_settings()
    try:
        event = asyncio.run(
            rollback_champion(settings, pair, parse_interval(interval), horizon, from_version)
        )
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    typer.echo(json.dumps({"champion": event.champion.version, "previous": event.previous_version}))


@app.command()
def migrate() -> None:
    """Bring the feature store's schema to the newest migration (the sink does this at start too)."""
    from cryptopredict.store.migrate import migrate as upgrade

    upgrade(get_settings().postgres)
    typer.echo("feature store schema is up to date")


@app.command()
def backup(
    directory: Annotated[Path, typer.Argument(help="a new or empty directory for the dumps and manifest")],
    only: Annotated[
        str, typer.Option(help="databases to dump: any of store,mlflow,optuna")
    ] = "store,mlflow,optuna",
    temporal: Annotated[bool, typer.Option(help="copy the local Temporal dev server's SQLite file")] = True,
    compress: Annotated[int, typer.Option(min=0, max=9, help="pg_dump's gzip level")] = 1,
) -> None:
    """Back up the PostgreSQL databases (custom-format pg_dump) and Temporal's state (docs/recovery.md)."""
    from cryptopredict.stack.backup import backup as run_backup
    from cryptopredict.stack.backup import stack_temporal_db
    from cryptopredict.stack.base import StackError

    settings = get_settings()
    temporal_db = stack_temporal_db(settings) if temporal else None
    if temporal and temporal_db is None:
        typer.echo("temporal: an external server, not backed up here (dump its databases: docs/recovery.md)")
    try:
        manifest = run_backup(
            settings, directory, roles=_roles(only), temporal_db=temporal_db, compress=compress
        )
    except StackError as exc:
        raise UserError(str(exc)) from exc
    typer.echo(json.dumps(manifest, indent=2))


@app.command()
def restore(
    directory: Annotated[Path, typer.Argument(help="a directory made by `cryptopredict backup`")],
    only: Annotated[
        str, typer.Option(help="databases to restore: any of store,mlflow,optuna")
    ] = "store,mlflow,optuna",
    target: Annotated[
        list[str] | None,
        typer.Option(help="restore database NAME into NEW instead (NAME=NEW; repeat)"),
    ] = None,
    clean: Annotated[bool, typer.Option(help="replace the objects of existing targets")] = False,
    temporal_db: Annotated[
        Path | None,
        typer.Option(help="write the backup's Temporal SQLite file here (Temporal stopped); default: none"),
    ] = None,
) -> None:
    """Restore a backup: the databases (into their own names, or --target NAME=NEW), and the Temporal file."""
    from cryptopredict.stack.backup import restore as run_restore
    from cryptopredict.stack.base import StackError

    rename = {}
    for item in target or []:
        name, sep, new = item.partition("=")
        if not (sep and name and new):
            raise UserError(f"--target {item!r}: expected NAME=NEW")
        rename[name] = new
    try:
        restored = run_restore(
            get_settings(), directory, roles=_roles(only), rename=rename, clean=clean, temporal_db=temporal_db
        )
    except StackError as exc:
        raise UserError(str(exc)) from exc
    for line in restored:
        typer.echo(line)


def _roles(text: str) -> list[str]:
    from cryptopredict.stack.backup import ROLES

    roles = [part.strip() for part in text.split(",") if part.strip()]
    if not roles or set(roles) - set(ROLES):
        raise UserError(f"--only {text!r}: name one or more of {','.join(ROLES)}")
    return roles


@app.command()
def serve() -> None:
    """Run the gRPC prediction server."""
    os.execv(sys.executable, [sys.executable, "-m", "grpc_server"])


@app.command()
def edge(
    binary: Annotated[
        Path | None,
        typer.Option(
            help="a prebuilt stream-edge executable (the image has /usr/local/bin/stream-edge); default:"
            " built from infra/stream-edge with Go on first use"
        ),
    ] = None,
    upstream: Annotated[
        str | None,
        typer.Option(
            help="host:port of the gRPC server that admits subscriptions (a Service name in Kubernetes;"
            " with TLS, a name its certificate has); default: grpc.host and grpc.port"
        ),
    ] = None,
) -> None:
    """Run the stream edge (Go) beside the gRPC server: StreamPredictions for many subscribers on
    grpc.edge_port, read from the predictions topic; every other call relayed to the server."""
    from grpc_server.edge import edge_command

    settings = get_settings()
    if binary is None:
        from cryptopredict.stack.tools import edge_binary

        binary = edge_binary(settings)
    elif not (binary.is_file() and os.access(binary, os.X_OK)):
        raise UserError(f"--binary {binary}: no executable file there")
    args, env = edge_command(settings, binary, upstream=upstream)
    os.execve(args[0], args, env)


@app.command("tls-cert")
def tls_cert(
    directory: Annotated[Path, typer.Option(help="where server.crt and server.key are written")] = Path(
        ".local/tls"
    ),
    host: Annotated[list[str] | None, typer.Option(help="DNS name or IP; repeat (default: loopback)")] = None,
) -> None:
    """Create a self-signed certificate for `serve` over TLS, and print the settings that use it."""
    from cryptopredict.tls import DEFAULT_HOSTS, write_self_signed

    cert, key = write_self_signed(directory, tuple(host) if host else DEFAULT_HOSTS)
    typer.echo(f"CRYPTOPREDICT_GRPC__TLS_CERT_FILE={cert.resolve()}")
    typer.echo(f"CRYPTOPREDICT_GRPC__TLS_KEY_FILE={key.resolve()}")


@app.command()
def clean(
    namespace: str = typer.Argument(help="The namespace of a demo or test run, e.g. demo"),
    yes: bool = typer.Option(False, "--yes", help="Remove what is listed (without it: only list)"),
) -> None:
    """List (and with --yes remove) what a demo or test namespace left: topics, store rows, registered
    models, Optuna studies, schedules. Nothing outside the namespace is touched."""
    from cryptopredict.cli.clean import clean_namespace

    try:
        found = asyncio.run(clean_namespace(get_settings(), namespace, dry_run=not yes))
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    typer.echo(json.dumps({"namespace": namespace, "removed" if yes else "found": found}, indent=2))


@app.command()
def demo(
    min_candles: int = 300,
    predictions: int = 20,
    timeout_s: float = 900.0,
    venues: Annotated[
        str, typer.Option(help="Comma list of venues replayed and read at once; Kraken is always one")
    ] = "kraken,coinbase",
) -> None:
    """The main job: stack up, replay trades, build candles, train via Temporal, stream predictions."""
    from cryptopredict.cli.demo import run_demo

    _logging("warning")
    venue_list = tuple(v.strip() for v in venues.split(",") if v.strip())
    for venue in venue_list:
        _check_venue(venue)
    summary = asyncio.run(
        run_demo(
            get_settings(),
            min_candles=min_candles,
            predictions=predictions,
            timeout_s=timeout_s,
            venues=venue_list,
        )
    )
    typer.echo(json.dumps(summary))


@app.command()
def drill(
    faults: Annotated[
        str | None, typer.Option(help="comma list of faults (default: all; see docs/reliability.md)")
    ] = None,
    outage_s: Annotated[
        float | None, typer.Option(help="length of every outage (default: each fault's own)")
    ] = None,
    ci: Annotated[bool, typer.Option(help="the CI profile: 2 faults, 10 s outages")] = False,
    report: Annotated[
        Path | None, typer.Option(help="markdown file whose drill table is replaced (docs/reliability.md)")
    ] = None,
) -> int:
    """Fault drills of the whole pipeline on the stack: one fault at a time, checked against the
    uninterrupted run of a seeded replay. Exits 1 when a check fails."""
    from cryptopredict.cli.drill import run
    from cryptopredict.drill.runner import FAULTS

    _logging("warning")
    names = [f.strip() for f in faults.split(",") if f.strip()] if faults else None
    unknown = [n for n in names or [] if n not in FAULTS]
    if unknown:
        raise UserError(f"unknown fault(s) {unknown}: faults are {', '.join(FAULTS)}")
    return run(get_settings(), names, outage_s, ci, report)


def main(argv: list[str] | None = None) -> int:
    try:
        # Without standalone mode, click returns the code of a `typer.Exit` instead of exiting.
        result = app(args=argv, standalone_mode=False)
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except ValidationError as exc:  # settings that cannot work, or a request that is not valid
        typer.echo(f"error: {validation_error_line(exc)}", err=True)
        return 2
    except (ConnectionError, TimeoutError) as exc:
        typer.echo(f"error: {exc}", err=True)
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
    return result if isinstance(result, int) else 0
