"""Every SQL query of the Grafana dashboards (panels, annotations, variables) runs on the stack's real
PostgreSQL, with Grafana's macros substituted as its PostgreSQL datasource does, after the store and
the MLflow registry are seeded through the project's own writers, and returns rows of the columns and
types the generator declares."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest
from mlflow import MlflowClient

from cryptopredict.ml.registry import mark_challenger, promote, register_version
from cryptopredict.ml.synthetic import synthetic_candles
from cryptopredict.models import DeadLetter, NewsItem, Prediction, SentimentScore
from cryptopredict.settings import Settings
from cryptopredict.store.candles import async_engine, insert_dead_letters, upsert_candles, upsert_predictions
from cryptopredict.store.migrate import migrate
from cryptopredict.store.news import insert_news_items, insert_sentiment_scores

pytestmark = pytest.mark.integration

GENERATOR = Path(__file__).resolve().parents[2] / "infra" / "grafana" / "generate.py"
N_CANDLES = 180


@pytest.fixture(scope="module")
def start() -> datetime:
    # The last three hours: the registry's rows are stamped with the wall clock.
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now - timedelta(minutes=N_CANDLES + 5)


@pytest.fixture(scope="module")
def pair() -> str:
    return f"G{uuid.uuid4().hex[:5].upper()}/USD"


@pytest.fixture(scope="module")
async def seeded_store(settings: Settings, start: datetime, pair: str) -> str:
    """Candles, predictions of two model versions, news with scores and dead letters, in the range."""
    migrate(settings.postgres)
    candles = synthetic_candles(pair, 60, N_CANDLES, start, seed=8, gap_every=50)
    step = timedelta(minutes=1)
    predictions = []
    for i, candle in enumerate(candles[:-1]):
        version, offset = ("1", 0.0) if i < N_CANDLES // 2 else ("2", 5.0)
        predicted = candle.close + offset
        predictions.append(
            Prediction(
                pair=pair,
                interval_s=60,
                horizon_s=60,
                made_at=candle.window_end + timedelta(seconds=2),
                feature_time=candle.window_start,
                target_time=candle.window_end + step,
                last_price=candle.close,
                predicted_price=predicted,
                lower_price=predicted - 30,
                upper_price=predicted + 30,
                model_name="dashboard-test",
                model_version=version,
            )
        )
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
        for i, source in enumerate(["sentiment", "news:dashboard-test", "feed", "sentiment"])
    ]
    engine = async_engine(settings.postgres)
    try:
        await upsert_candles(engine, candles)
        await upsert_predictions(engine, predictions)
        await insert_news_items(engine, news)
        await insert_sentiment_scores(engine, scores)
        await insert_dead_letters(engine, letters)
    finally:
        await engine.dispose()
    return pair


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
    name = f"dashboard-test-{uuid.uuid4().hex[:6]}"
    first = register_version(
        client, f"runs:/{run_id}/persistence", name, run_id, {"kind": "persistence", "test_mae": "10.5"}
    )
    promote(client, name, str(first.version), "first champion: persistence baseline")
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


def test_every_sql_query_returns_rows_of_its_columns(
    generate: ModuleType, settings: Settings, seeded_store: str, seeded_registry: str, start: datetime
) -> None:
    variables = {"pair": seeded_store, "interval_s": "60", "horizon_s": "60", "window": "60"}
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
    generate: ModuleType, settings: Settings, seeded_store: str, start: datetime
) -> None:
    """Spot checks that the panels show the right numbers, not just the right shapes."""
    variables = {"pair": seeded_store, "interval_s": "60", "horizon_s": "60", "window": "60"}
    end = datetime.now(UTC) + timedelta(minutes=5)
    url = database_url(settings, "cryptopredict-features")
    _, per_version = run_query(url, generate.substitute_sql(generate.PER_VERSION.sql, start, end, variables))
    by_version = {row[1]: row for row in per_version}
    assert set(by_version) == {"1", "2"}
    # Version 1 predicts the last close: its MAE is persistence's and its skill is zero.
    assert float(by_version["1"][5]) == pytest.approx(float(by_version["1"][6]))
    assert float(by_version["1"][7]) == pytest.approx(0.0, abs=1e-12)
    _, served = run_query(url, generate.substitute_sql(generate.FIRST_SERVED.sql, start, end, variables))
    assert [row[1] for row in served] == [
        "dashboard-test v1 starts serving",
        "dashboard-test v2 starts serving",
    ]
