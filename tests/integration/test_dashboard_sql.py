"""Every SQL query of the Grafana dashboards (panels, annotations, variables) runs on the stack's real
PostgreSQL, with Grafana's macros substituted as its PostgreSQL datasource does, and returns rows of the
columns and types the generator declares.

The market side of the store is filled by replaying three hours of trades through the real pipeline:
replay exchange -> feed (which rejects the malformed messages the exchange mixes in) -> Kafka -> Faust
worker (candles, indicators, predictions of the champion, promoted from persistence to XGBoost halfway)
-> store, so the ledger holds outcomes of two versions. News and scores are written by the writers the
news workflows use (that path, with the real LLM, is tested in test_news_workflows), and the registry
holds a challenger with the gate's reasons.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import mlflow
import psycopg
import pytest
from mlflow import MlflowClient
from sqlalchemy import text
from test_grpc_server import log_persistence
from test_pipeline import free_port
from test_prediction_agent import LAGS, log_xgboost, promote, register, wait_for_log
from topic_prefixes import NAMESPACE, run_prefix, session_pair

from cryptopredict.drill import start_worker
from cryptopredict.kafka_admin import ensure_topics
from cryptopredict.kraken.sources import synthetic_trades
from cryptopredict.ml.registry import mark_challenger, register_version
from cryptopredict.ml.registry import promote as promote_version
from cryptopredict.models import DeadLetter, NewsItem, SentimentScore
from cryptopredict.settings import Settings
from cryptopredict.simulators.exchange import Faults, ReplayExchange
from cryptopredict.store.candles import async_engine, insert_dead_letters
from cryptopredict.store.migrate import migrate
from cryptopredict.store.news import insert_news_items, insert_sentiment_scores
from cryptopredict.topics import registered_model_name, registered_model_prefix
from streams.trade_feed import run_feed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

GENERATOR = Path(__file__).resolve().parents[2] / "infra" / "grafana" / "generate.py"
N_CANDLES = 180
PROMOTE_AT = N_CANDLES // 2  # candles in the store when the XGBoost version becomes champion
SPEED = 300  # replay: one minute of trades every 0.2 s


@pytest.fixture(scope="module")
def start() -> datetime:
    # The last three hours: the registry's rows are stamped with the wall clock.
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now - timedelta(minutes=N_CANDLES + 5)


@pytest.fixture(scope="module")
def pair() -> str:
    return session_pair("G")


@pytest.fixture(scope="module")
async def replayed_store(
    settings: Settings, start: datetime, pair: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    migrate(settings.postgres)
    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    mlflow.set_experiment("cryptopredict-dashboard-tests")
    client = MlflowClient(settings.mlflow.tracking_uri)
    name = registered_model_name(pair, 60, 1)
    promote_version(client, name, register(client, name, log_persistence(), "persistence"), "first champion")
    prefix = run_prefix("dash")
    run_settings = settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update={"topic_prefix": prefix}),
            "kraken": settings.kraken.model_copy(update={"pairs": [pair]}),
        }
    )
    await ensure_topics(run_settings.kafka)
    env = os.environ | {
        "CRYPTOPREDICT_KAFKA__TOPIC_PREFIX": prefix,
        "CRYPTOPREDICT_KRAKEN__PAIRS": f'["{pair}"]',
        "CRYPTOPREDICT_MODEL__HORIZONS_CANDLES": "[1]",
        "CRYPTOPREDICT_FEATURES__INTERVAL_S": "60",
        "CRYPTOPREDICT_MODEL__LAGS": str(len(LAGS)),
        "CRYPTOPREDICT_METRICS__STREAM_PORT": str(free_port()),
    }
    log = tmp_path_factory.mktemp("dashboards") / "faust.log"
    with log.open("wb") as out:
        worker = start_worker(env, out)
    engine = async_engine(settings.postgres)
    try:
        await wait_for_log(log, f"serving {name} v1")
        trades = list(synthetic_trades(pair, start, minutes=N_CANDLES, trades_per_minute=20, seed=8))
        exchange = ReplayExchange(trades, speed=SPEED, faults=Faults(malformed_every=400))
        replay_started = datetime.now(UTC)
        await exchange.start()
        try:
            feed = asyncio.create_task(run_feed(run_settings, exchange.url, max_trades=len(trades)))
            stored = "SELECT count(*) FROM candles WHERE pair = :pair AND interval_s = 60"
            await until(engine, stored, {"pair": pair}, PROMOTE_AT)
            xgboost = register(client, name, log_xgboost(LAGS, seed=5), "xgboost")
            await promote(run_settings, client, name, xgboost, pair=pair)
            counts = await asyncio.wait_for(feed, 120)
        finally:
            await exchange.stop()
        assert counts["trades"] == len(trades) and counts["rejected"] >= 1, counts
        # Every prediction whose target candle was replayed has its outcome, from both versions.
        versions = "SELECT count(DISTINCT model_version) FROM prediction_outcomes WHERE pair = :pair"
        await until(engine, versions, {"pair": pair}, 2)
        rejected = "SELECT count(*) FROM dead_letters WHERE source = 'trade_feed' AND at >= :since"
        await until(engine, rejected, {"since": replay_started}, counts["rejected"])
        await seed_news(engine, start)
        yield pair
    finally:
        await engine.dispose()
        worker.terminate()
        worker.wait(30)
        client.delete_registered_model(name)


async def until(
    engine: Any, query: str, params: dict[str, Any], at_least: int, timeout_s: float = 180
) -> None:
    """Polls `query` (one count) until it reaches `at_least`."""
    async with asyncio.timeout(timeout_s):
        while True:
            async with engine.connect() as conn:
                count = (await conn.execute(text(query), params)).scalar_one()
            if count >= at_least:
                return
            await asyncio.sleep(0.5)


async def seed_news(engine: Any, start: datetime) -> None:
    """Headlines with per-coin scores and the news path's dead letters, through the store's writers."""
    tag = uuid.uuid4().hex[:8]
    news = [
        NewsItem(
            id=f"dashboard-test-{tag}-{i}",
            title=f"Bitcoin headline {i}",
            url=f"https://example.invalid/{tag}/{i}",
            source="dashboard-test",
            published_at=start + timedelta(minutes=10 * i),
            ingested_at=start + timedelta(minutes=10 * i + 1),
            currencies=["BTC"],
        )
        for i in range(12)
    ]
    scores = [
        SentimentScore(
            news_id=item.id,
            coin=coin,
            score=(i % 3) - 1,
            confidence=0.5 + 0.04 * i,
            reason="test",
            model="dashboard-test",
            prompt_version="test",
            scored_at=item.ingested_at + timedelta(seconds=30),
        )
        for i, item in enumerate(news)
        for coin in ("BTC", "ETH")
    ]
    letters = [
        DeadLetter(
            source=source, reason=f"{source} test: reason {i}", raw="{}", at=start + timedelta(minutes=7 * i)
        )
        for i, source in enumerate(["sentiment", "news:dashboard-test", "sentiment"])
    ]
    await insert_news_items(engine, news)
    await insert_sentiment_scores(engine, scores)
    await insert_dead_letters(engine, letters)


@pytest.fixture(scope="module")
def seeded_registry(settings: Settings) -> Iterator[str]:
    """A registered model with a promoted version and a challenger with its reasons, and a run."""
    client = MlflowClient(settings.mlflow.tracking_uri)
    experiment = client.get_experiment_by_name(settings.mlflow.experiment)
    experiment_id = (
        experiment.experiment_id if experiment else client.create_experiment(settings.mlflow.experiment)
    )
    run_id = client.create_run(experiment_id).info.run_id
    client.set_terminated(run_id)
    name = f"{registered_model_prefix(NAMESPACE)}dashboard{uuid.uuid4().hex[:6]}"
    first = register_version(
        client, f"runs:/{run_id}/persistence", name, run_id, {"kind": "persistence", "test_mae": "10.5"}
    )
    promote_version(client, name, str(first.version), "first champion: persistence baseline")
    second = register_version(
        client,
        f"runs:/{run_id}/xgboost",
        name,
        run_id,
        {
            "kind": "xgboost",
            "test_mae": "10.7",
            "test_skill_vs_persistence": "-0.019",
            "test_interval_coverage": "0.81",
        },
    )
    mark_challenger(client, name, str(second.version), ["MAE 10.7 is not below persistence's 10.5"])
    yield name
    client.delete_registered_model(name)
    client.delete_run(run_id)


def database_url(settings: Settings, datasource_uid: str) -> str:
    url = settings.postgres.url
    if datasource_uid == "cryptopredict-mlflow":
        return url.rsplit("/", 1)[0] + "/" + settings.postgres.mlflow_database
    assert datasource_uid == "cryptopredict-features", datasource_uid
    return url


KINDS: dict[str, tuple[type, ...]] = {
    "time": (datetime,),
    "number": (int, float, Decimal),
    "text": (str,),
    "bool": (bool,),
}


def run_query(url: str, query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    # psycopg without parameters: the SQL goes to the server as Grafana sends it (no placeholder parsing).
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(query)  # type: ignore[call-overload]
        assert cur.description is not None
        return [column.name for column in cur.description], cur.fetchall()


def panel_variables(pair: str, window: str = "60") -> dict[str, str]:
    """The dashboards' variables as a viewer of the replayed Kraken target sets them."""
    return {"exchange": "kraken", "pair": pair, "interval_s": "60", "horizon_s": "60", "window": window}


def test_every_sql_query_returns_rows_of_its_columns(
    generate: ModuleType, settings: Settings, replayed_store: str, seeded_registry: str, start: datetime
) -> None:
    variables = panel_variables(replayed_store)
    end = datetime.now(UTC) + timedelta(minutes=5)
    checked = []
    for file, board in generate.load_dashboards().items():
        for where, raw_sql in generate.sql_in(board):
            spec = next(s for s in generate.SQL_QUERIES.values() if s.sql == raw_sql)
            query = generate.substitute_sql(raw_sql, start, end, variables)
            names, rows = run_query(database_url(settings, spec.datasource.uid), query)
            label = f"{file} {where}"
            assert names == list(spec.columns), f"{label}: columns {names}"
            assert rows, f"{label}: no rows on the seeded data\n{query}"
            for index, (column, kind) in enumerate(spec.columns.items()):
                values = [row[index] for row in rows if row[index] is not None]
                wrong = [
                    v
                    for v in values
                    if not isinstance(v, KINDS[kind]) or (kind == "number" and isinstance(v, bool))
                ]
                assert not wrong, f"{label}: column {column} should be {kind}, got {wrong[:3]}"
                if kind == "time" and column == "time":
                    assert len(values) == len(rows), f"{label}: null time"
            checked.append(label)
    assert len(checked) >= len(generate.SQL_QUERIES)


def test_the_seeded_figures_come_out(
    generate: ModuleType, settings: Settings, replayed_store: str, start: datetime
) -> None:
    """Spot checks that the panels show the right numbers, not just the right shapes."""
    variables = panel_variables(replayed_store)
    end = datetime.now(UTC) + timedelta(minutes=5)
    url = database_url(settings, "cryptopredict-features")
    _, per_version = run_query(url, generate.substitute_sql(generate.PER_VERSION.sql, start, end, variables))
    by_version = {row[1]: row for row in per_version}
    assert set(by_version) == {"1", "2"}
    # Version 1 (persistence) predicts the last close: its MAE is persistence's and its skill is zero.
    assert float(by_version["1"][5]) == pytest.approx(float(by_version["1"][6]))
    assert float(by_version["1"][7]) == pytest.approx(0.0, abs=1e-12)
    _, served = run_query(url, generate.substitute_sql(generate.FIRST_SERVED.sql, start, end, variables))
    name = registered_model_name(replayed_store, 60, 1)
    assert [row[1] for row in served] == [f"{name} v1 starts serving", f"{name} v2 starts serving"]


def test_coverage_by_regime_is_each_regimes_share_inside(
    generate: ModuleType, settings: Settings, replayed_store: str, start: datetime
) -> None:
    # A window longer than the range: each regime's last point is its coverage over the whole range.
    variables = panel_variables(replayed_store, window="100000")
    end = datetime.now(UTC) + timedelta(minutes=5)
    url = database_url(settings, "cryptopredict-features")
    query = generate.substitute_sql(generate.COVERAGE_BY_REGIME.sql, start, end, variables)
    _, rows = run_query(url, query)
    last = {regime: coverage for _, regime, coverage in rows}
    assert set(last) <= {"calm", "mid", "wild", "none"} and last, last
    _, expected = run_query(
        url,
        f"""
        SELECT coalesce(volatility_regime, 'none'), avg(CASE WHEN inside_interval THEN 1.0 ELSE 0.0 END)
        FROM prediction_outcomes
        WHERE exchange = 'kraken' AND pair = '{replayed_store}' AND interval_s = 60 AND horizon_s = 60
          AND inside_interval IS NOT NULL AND target_time BETWEEN '{start:%Y-%m-%dT%H:%M:%SZ}'
          AND '{end:%Y-%m-%dT%H:%M:%SZ}'
        GROUP BY 1
        """,
    )
    assert {regime: float(c) for regime, c in last.items()} == pytest.approx(
        {regime: float(c) for regime, c in expected}
    )
