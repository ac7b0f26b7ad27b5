"""The RisingWave feature store offline: its DDL (infra/risingwave/feature_store.sql) and every statement the
project runs against the store, parsed with a real SQL parser (sqlglot's `risingwave` dialect). RisingWave
itself cannot be installed here, so what it would answer is not checked; what it would be sent is.

What runs against the store, by `settings.store.dialect` (the header of the DDL says the same):

- On both, the same SQL (reads): training and the drift check (`store.candles.read_candles`,
  `read_indicator_values`, `store.news.read_sentiment_features` through `store.inputs.read_stored_inputs`),
  serving (the prediction agent's `newest_sentiment_at` and `sentiment_at_closes`, `store.ledger`'s
  `ledger_summary` for GetLedger and the drift check), `cryptopredict report` (`store.report`),
  `store.drift.read_drift_reports`, and the dashboards' queries of datasource `cryptopredict-features`
  (those of `cryptopredict-mlflow` read MLflow's own PostgreSQL database).
- Writes with a RisingWave path (`store.dialect` = risingwave): the news flow's `insert_news_items` (the
  de-duplication: stored ids read, the others inserted), `insert_sentiment_scores` (a plain insert,
  overwriting by primary key) and `insert_dead_letters` (a plain insert: RisingWave's table has no key),
  and the prediction agent's `adapt_interval_level` (its row read without a lock, then inserted whole
  over itself). Each starts with SET RW_IMPLICIT_FLUSH (read-after-write as on PostgreSQL). No INSERT ... ON
  CONFLICT, no SELECT ... FOR UPDATE, no advisory lock; each INSERT names every column of its RisingWave
  table, in order (RisingWave's INSERT takes all columns or none).
- PostgreSQL only: the sink's upserts (`upsert_rows` and its wrappers; `store.sink_enabled` is off on
  RisingWave, which ingests the topics), the drift monitor's `upsert_drift_records` (only with the sink
  on), the Alembic migrations and `migrate`'s advisory lock, `cryptopredict load`, the rows
  `cryptopredict clean` removes (a demo or test namespace runs on the local stack); and, outside the
  store package, `cryptopredict demo`'s count of candles and the benchmarks, which run on the local stack.

Each store function runs here against an engine that records its statements instead of sending them
(both dialects), so the statements checked are the ones the code executes; a new public function of the
store package fails `test_every_store_function_is_classified` until it is put in one of the lists.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from collections import namedtuple
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, get_args

import pandas as pd
import pytest
import sqlglot
from sqlalchemy.dialects.postgresql import asyncpg, psycopg
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlglot import exp

import cryptopredict.store
from cryptopredict import topics
from cryptopredict.features.candles import gap_candle
from cryptopredict.features.indicators import IndicatorConfig
from cryptopredict.models import DeadLetter, NewsItem, SentimentScore
from cryptopredict.settings import PostgresSettings, StoreSettings
from cryptopredict.store import adaptation, candles, drift, ledger, news, report
from cryptopredict.store.candles import async_engine, sync_engine, upsert_rows
from cryptopredict.store.dialect import StoreDialect, engine_options, store_dialect
from cryptopredict.store.inputs import read_cross_venue_candles, read_stored_inputs
from cryptopredict.store.schema import metadata

pytestmark = pytest.mark.unit

DDL = Path(__file__).resolve().parents[2] / "infra" / "risingwave" / "feature_store.sql"
# What the store's engines compile with: psycopg for the sync ones, asyncpg for the async ones.
POSTGRES, POSTGRES_ASYNC = psycopg.dialect(), asyncpg.dialect()

# --- the DDL -------------------------------------------------------------------------------------------


def ddl_statements() -> list[exp.Expr]:
    return [s for s in sqlglot.parse(DDL.read_text(), read="risingwave") if s is not None]


def ddl_tables() -> dict[str, exp.Create]:
    return {s.this.this.name: s for s in ddl_statements() if isinstance(s, exp.Create) and s.kind == "TABLE"}


def opening(statement: exp.Expr) -> str:
    """The statement's first words, to name it in a failure."""
    return " ".join(statement.sql(dialect="risingwave").split())[:90]


def test_every_ddl_statement_parses_to_a_real_expression() -> None:
    statements = ddl_statements()
    # Every ;-terminated statement came back as one expression (none swallowed by another).
    assert len(statements) == len(re.findall(r";\s*$", re.sub(r"--[^\n]*", "", DDL.read_text()), re.M))
    opaque = [opening(s) for s in statements if isinstance(s, exp.Command)]
    assert not opaque, f"kept only as an opaque command (not understood): {opaque}"
    assert all(isinstance(s, exp.Create) for s in statements)


# Kafka tables: the topic each ingests (JSON of the pydantic models, as the PostgreSQL sink reads them).
TOPIC_OF = {
    "candles": topics.CANDLES,
    "technical_indicators": topics.TECHNICAL_INDICATORS,
    "dead_letters": topics.DEAD_LETTERS,
    "news_items": topics.NEWS,
    "sentiment_scores": topics.NEWS_SENTIMENT,
    "predictions": topics.PREDICTIONS,
    "drift_reports": topics.DRIFT_REPORTS,
}
# Written through SQL only (cryptopredict.store.adaptation), not read from a topic.
WRITTEN_BY_SQL = {"interval_adaptation", "news_scoring"}
# PostgreSQL's identity and the key that stops its sink storing a letter it reads again: RisingWave reads
# each record once (its Kafka offsets are in its checkpointed state), and the news flow inserts.
POSTGRES_ONLY_COLUMNS = {"dead_letters": ["id", "letter_key"]}


def risingwave_type(sql_type: str, dialect: str) -> str:
    """A column type as RisingWave spells it (TEXT is VARCHAR there)."""
    return re.sub(r"\bTEXT\b", "VARCHAR", exp.DataType.build(sql_type, dialect=dialect).sql("risingwave"))


def declared_columns(create: exp.Create) -> list[tuple[str, str]]:
    return [
        (c.name, risingwave_type(c.args["kind"].sql("risingwave"), "risingwave"))
        for c in create.this.expressions
        if isinstance(c, exp.ColumnDef)
    ]


def test_every_table_has_the_columns_types_and_key_of_the_postgres_schema() -> None:
    tables = ddl_tables()
    assert set(tables) == set(metadata.tables)
    for name, table in metadata.tables.items():
        skipped = POSTGRES_ONLY_COLUMNS.get(name, [])
        expected = [
            (c.name, risingwave_type(c.type.compile(dialect=POSTGRES), "postgres"))
            for c in table.columns
            if c.name not in skipped
        ]
        # In order, too: an INSERT on RisingWave names every column in the table's order.
        assert declared_columns(tables[name]) == expected, name
        keys = [k for k in tables[name].this.expressions if isinstance(k, exp.PrimaryKey)]
        if name in POSTGRES_ONLY_COLUMNS:
            assert not keys, name
        else:
            assert [[i.name for i in k.expressions] for k in keys] == [[c.name for c in table.primary_key]]


def test_kafka_tables_read_plain_json_of_their_topic_and_keep_their_arrival_time() -> None:
    for name, create in ddl_tables().items():
        properties = create.args.get("properties")
        if name in WRITTEN_BY_SQL:
            assert properties is None, f"{name} is written through SQL: no connector"
            continue
        settings = {p.name: p.args["value"].name for p in properties.expressions if type(p) is exp.Property}
        assert settings["connector"] == "kafka" and settings["topic"] == TOPIC_OF[name], name
        # FORMAT UPSERT would key rows by the Kafka message key (RisingWave requires the primary key to be
        # the INCLUDE KEY column), and our records are keyed by pair: one row per pair would survive.
        formats = [(type(p).__name__, p.name) for p in properties.expressions if type(p) is not exp.Property]
        assert formats == [("FileFormatProperty", "PLAIN"), ("EncodeProperty", "JSON")], name
        # PostgreSQL's written_at = now() on write is the processing time of the record here.
        generated = {
            c.name: c.find(exp.ComputedColumnConstraint)
            for c in create.this.expressions
            if isinstance(c, exp.ColumnDef) and c.find(exp.ComputedColumnConstraint)
        }
        expected = {"written_at"} if "written_at" in metadata.tables[name].c else set()
        assert set(generated) == expected, name
        assert all(g is not None and g.this.name.lower() == "proctime" for g in generated.values())


def test_the_outcome_ledger_is_the_same_query_on_both() -> None:
    # The newest revision that creates the view (0010 recreated it with the venue).
    migration = importlib.import_module("cryptopredict.store.migrations.versions.0010_exchange")
    postgres = sqlglot.parse_one(migration.OUTCOMES, read="postgres")
    (risingwave,) = [s for s in ddl_statements() if s.find(exp.Table).name == "prediction_outcomes"]
    assert risingwave.kind == "VIEW" and risingwave.find(exp.MaterializedProperty)
    assert risingwave.expression.sql("postgres") == postgres.expression.sql("postgres")


# --- statements: what RisingWave lacks ------------------------------------------------------------------


def parsed(sql: str, where: str) -> exp.Expr:
    """One statement parsed in the RisingWave dialect; a Command fallback (not understood) fails."""
    statements = [s for s in sqlglot.parse(sql, read="risingwave") if s is not None]
    assert len(statements) == 1, f"{where}: {len(statements)} statements"
    assert not isinstance(statements[0], exp.Command), f"{where}: kept only as an opaque command:\n{sql}"
    return statements[0]


def unsupported(statement: exp.Expr) -> list[str]:
    """What RisingWave does not run (its INSERT, SELECT and function references): INSERT ... ON CONFLICT,
    row locks (FOR UPDATE / SHARE) and advisory locks."""
    found = [f"ON CONFLICT {c.sql('postgres')}" for c in statement.find_all(exp.OnConflict)]
    found += [
        f"FOR {'UPDATE' if lock.args.get('update') else 'SHARE'}" for lock in statement.find_all(exp.Lock)
    ]
    found += [
        f.sql("postgres")
        for f in statement.find_all(exp.Func)
        if re.match(r"pg_(try_)?advisory", (f.name if isinstance(f, exp.Anonymous) else f.sql_name()), re.I)
    ]
    return found


def test_the_checks_see_what_risingwave_lacks() -> None:
    # The test's own instruments: a statement RisingWave would refuse is caught, and one it would not
    # understand at all is an opaque command.
    assert unsupported(parsed("INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO NOTHING", "x"))
    assert unsupported(parsed("SELECT a FROM t WHERE b = 1 FOR UPDATE", "x"))
    assert unsupported(parsed("SELECT pg_advisory_xact_lock(1)", "x"))
    assert not unsupported(parsed("INSERT INTO t (a) VALUES (1)", "x"))
    with pytest.raises(AssertionError, match="opaque command"):
        parsed("CREATE TABLE t (a INT PRIMARY KEY) ON CONFLICT DO NOTHING", "x")


# --- statements of the store functions, recorded ---------------------------------------------------------


@dataclass
class Recorder:
    """Stands for a store engine (sync or async) of one dialect: records each statement it is given and
    answers with rows from `respond(sql)` (none by default)."""

    dialect: StoreDialect
    respond: Callable[[str], list[Any]]
    executed: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def sync_engine(self) -> Recorder:
        return self

    def get_execution_options(self) -> dict[str, Any]:
        return {"cryptopredict_store_dialect": self.dialect}

    driver: Dialect = POSTGRES

    def run(self, statement: ClauseElement, params: Any = None) -> Result:
        sql = compiled(statement, params, self.driver)
        self.executed.append((sql, params))
        return Result(self.respond(sql))

    # sync: engine.connect() / engine.begin() -> connection.execute(...)
    @contextmanager
    def connect(self) -> Iterator[Recorder]:
        yield self

    begin = connect

    def execute(self, statement: ClauseElement, params: Any = None) -> Result:
        return self.run(statement, params)


@dataclass
class AsyncRecorder(Recorder):
    driver: Dialect = POSTGRES_ASYNC

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncRecorder]:
        yield self

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncRecorder]:  # type: ignore[override]
        yield self

    async def execute(self, statement: ClauseElement, params: Any = None) -> Result:
        return self.run(statement, params)


class Result(list[Any]):
    def all(self) -> list[Any]:
        return list(self)

    def mappings(self) -> Result:
        return self

    def one(self) -> Any:
        assert len(self) == 1
        return self[0]

    def first(self) -> Any:
        return self[0] if self else None

    def scalar(self) -> Any:
        return self[0][0] if self else None


def compiled(statement: ClauseElement, params: Any, driver: Dialect) -> str:
    """The SQL text the store's engines send for the statement (executemany: its first row's columns)."""
    first = params[0] if isinstance(params, list) and params else params
    keys = list(first) if isinstance(first, dict) else None
    return str(
        statement.compile(dialect=driver, column_keys=keys, compile_kwargs={"render_postcompile": True})
    )


def no_rows(sql: str) -> list[Any]:
    return []


@pytest.fixture(autouse=True)
def recorded_read_sql(monkeypatch: pytest.MonkeyPatch) -> None:
    """pd.read_sql records on the Recorder too, and returns no rows with the query's columns."""

    def read_sql(query: ClauseElement, con: Recorder, *args: Any, **kwargs: Any) -> pd.DataFrame:
        if rows := con.run(query):
            return pd.DataFrame(rows)
        columns = sqlglot.parse_one(con.executed[-1][0], read="risingwave").named_selects
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})

    monkeypatch.setattr(pd, "read_sql", read_sql)


T0 = datetime(2026, 1, 1, tzinfo=UTC)
PAIR = "BTC/USD"
ITEM = NewsItem(
    id="n1", title="t", url="https://n/1", source="rss", published_at=T0, ingested_at=T0, currencies=["BTC"]
)
SCORE = SentimentScore(
    news_id="n1", coin="BTC", score=1, confidence=0.5, model="m", prompt_version="v1", scored_at=T0
)
LETTER = DeadLetter(source="news:rss", reason="invalid item", raw="{}", at=T0)
STATE = namedtuple("STATE", "alpha outcomes misses through")
OUTCOME = namedtuple("OUTCOME", "target_time inside_interval")


def new_version_rows(sql: str) -> list[Any]:
    """A version seen for the first time (PostgreSQL's path reads the row it has just made)."""
    return [STATE(0.2, 0, 0, None)] if "FOR UPDATE" in sql else []


def adaptation_rows(sql: str) -> list[Any]:
    """A version with a stored state and one new outcome (a miss)."""
    if "FROM interval_adaptation" in sql:
        return [STATE(0.2, 10, 2, T0)]
    if "FROM prediction_outcomes" in sql:
        return [OUTCOME(T0 + timedelta(minutes=1), False)]
    return []


@dataclass(frozen=True)
class Call:
    function: Callable[..., Any]
    args: tuple[Any, ...]
    respond: Callable[[str], list[Any]] = no_rows


def key(function: Callable[..., Any]) -> str:
    return f"{function.__module__.rsplit('.', 1)[1]}.{function.__name__}"


STARTS = pd.DatetimeIndex([T0, T0 + timedelta(minutes=1)])


def stored_candles(sql: str) -> list[Any]:
    """Three gap candles of PAIR, and the newest candle's end, for the functions that read on from them."""
    if sql.startswith("SELECT max(candles.window_end)"):
        return [(T0 + timedelta(minutes=3),)]
    if sql.startswith("SELECT candles."):
        return [gap_candle(PAIR, 60, T0 + timedelta(minutes=i), 100.0).model_dump() for i in range(3)]
    return []


# The same SQL on PostgreSQL and on RisingWave.
READS = [
    Call(candles.read_candles, (PAIR, 60)),
    Call(candles.read_indicator_values, (PAIR, 60)),
    Call(read_stored_inputs, (PAIR, 60, IndicatorConfig()), stored_candles),
    Call(read_cross_venue_candles, ({"coinbase": "coinbase:BTC/USD"}, 60)),
    Call(read_cross_venue_candles, ({"coinbase": "coinbase:BTC/USD"}, 60, T0, T0 + timedelta(hours=1))),
    Call(news.read_sentiment_features, ("BTC", STARTS)),
    Call(news.read_sentiment_features, ("BTC", STARTS, "model")),
    Call(news.sentiment_at_closes, (PAIR, STARTS, 60)),
    Call(news.scored_sentiment_at_closes, (PAIR, pd.DataFrame({"window_start": STARTS}), 60)),
    Call(news.newest_sentiment_at, (PAIR, T0)),
    Call(news.pending_news_items, (10,)),
    Call(ledger.ledger_summary, (PAIR, 60, T0)),
    Call(drift.read_drift_reports, (PAIR, 60)),
    Call(report.newest_candle_end, (PAIR, 60)),
    Call(report.newest_outcome_time, (PAIR, 60, 60)),
    Call(report.read_candles_between, (PAIR, 60, T0, T0 + timedelta(hours=1))),
    Call(report.read_outcomes, (PAIR, 60, 60, T0, T0 + timedelta(hours=1))),
    Call(report.load_report, (PAIR, 60, 60, 1.0, 10), stored_candles),
]
# A path per dialect.
WRITES = [
    Call(news.insert_news_items, ([ITEM, ITEM.model_copy(update={"id": "n2"})],)),
    Call(news.insert_sentiment_scores, ([SCORE],)),
    Call(news.finish_scoring, ("n1", news.SCORED, T0, [SCORE])),
    Call(candles.insert_dead_letters, ([LETTER],)),
    Call(adaptation.adapt_interval_level, ("cryptopredict-btcusd-60s-h1", "3", 0.8, 0.005), adaptation_rows),
    # A version seen for the first time: its row is made.
    Call(adaptation.adapt_interval_level, ("cryptopredict-btcusd-60s-h1", "4", 0.8, 0.005), new_version_rows),
]
# Never sent to RisingWave (see the module's docstring).
POSTGRES_ONLY = {
    "candles.upsert_rows",
    "candles.upsert_candles",
    "candles.upsert_indicators",
    "candles.upsert_predictions",
    "drift.upsert_drift_records",
    "migrate.migrate",
    "migrate.downgrade",
    "loader.load_ohlcvt",
    "namespace.remove_namespace_rows",
}
# Make engines or read settings; send nothing.
NO_SQL = {"candles.async_engine", "candles.sync_engine", "dialect.store_dialect", "dialect.on_risingwave"}


async def run(call: Call, dialect: StoreDialect) -> list[str]:
    """The SQL text of every statement the call sends in this dialect, in order."""
    if inspect.iscoroutinefunction(call.function):
        recorder: Recorder = AsyncRecorder(dialect, call.respond)
        await call.function(recorder, *call.args)
    else:
        recorder = Recorder(dialect, call.respond)
        call.function(recorder, *call.args)
    return [sql for sql, _ in recorder.executed]


def store_modules() -> list[ModuleType]:
    names = [m.name for m in pkgutil.iter_modules(cryptopredict.store.__path__) if m.name != "migrations"]
    return [importlib.import_module(f"cryptopredict.store.{name}") for name in names]


def takes_a_store(function: Callable[..., Any]) -> bool:
    kinds = {"Engine", "AsyncEngine", "Engine | AsyncEngine", "PostgresSettings", "Settings"}
    return any(p.annotation in kinds for p in inspect.signature(function).parameters.values())


def test_every_store_function_is_classified() -> None:
    functions = {
        key(f)
        for module in store_modules()
        for name, f in inspect.getmembers(module, inspect.isfunction)
        if f.__module__ == module.__name__ and not name.startswith("_") and takes_a_store(f)
    }
    classes = [{key(c.function) for c in READS}, {key(c.function) for c in WRITES}, POSTGRES_ONLY, NO_SQL]
    classified = set().union(*classes)
    assert functions - classified == set(), "new store functions: put each in READS, WRITES or POSTGRES_ONLY"
    assert classified - functions == set(), "classified functions that are gone"
    assert sum(map(len, classes)) == len(classified), "a function in two lists"


@pytest.mark.parametrize("call", READS, ids=lambda c: key(c.function))
async def test_reads_are_the_same_sql_on_both_and_parse_in_risingwave(call: Call) -> None:
    on_postgres, on_risingwave = await run(call, "postgres"), await run(call, "risingwave")
    assert on_postgres, "sent nothing"
    assert on_risingwave == on_postgres
    for sql in on_risingwave:
        statement = parsed(sql, key(call.function))
        assert isinstance(statement, exp.Query), sql
        assert not unsupported(statement), sql


def insert_columns(statement: exp.Insert) -> tuple[str, list[str]]:
    schema = statement.this
    return schema.this.name, [c.name for c in schema.expressions]


@pytest.mark.parametrize("call", WRITES, ids=lambda c: f"{key(c.function)}({c.args[0]!r:.20})")
async def test_writes_take_a_risingwave_path_that_risingwave_runs(call: Call) -> None:
    columns = {name: [c for c, _ in declared_columns(t)] for name, t in ddl_tables().items()}
    on_postgres, on_risingwave = await run(call, "postgres"), await run(call, "risingwave")
    # The PostgreSQL path is the one RisingWave cannot run: the switch is what keeps it away.
    assert any(unsupported(parsed(sql, "postgres path")) for sql in on_postgres)
    inserts = 0
    for sql in on_risingwave:
        statement = parsed(sql, key(call.function))
        assert not unsupported(statement), sql
        # An UPDATE by key: the scoring outbox's row finished.
        assert isinstance(statement, exp.Query | exp.Insert | exp.Update | exp.Set), sql
        if isinstance(statement, exp.Insert):
            inserts += 1
            table, named = insert_columns(statement)
            assert named == columns[table], f"{sql}: RisingWave's INSERT names all columns, in order"
            assert not statement.args.get("returning"), sql
    # One per table written (news items come with their outbox rows).
    assert 1 <= inserts <= 2, on_risingwave
    # Written rows are visible to the next read when the call returns, as on PostgreSQL.
    assert on_risingwave[0] == "SET RW_IMPLICIT_FLUSH = true"


async def test_postgres_only_writes_use_what_risingwave_lacks() -> None:
    # Why the sink and the drift rows stay PostgreSQL's: their upserts are INSERT ... ON CONFLICT.
    for table in ("candles", "technical_indicators", "predictions", "drift_reports"):
        recorder = AsyncRecorder("postgres", no_rows)
        columns = metadata.tables[table].columns
        keys = tuple(c.name for c in columns if c.primary_key)
        row = {c.name: None for c in columns if c.server_default is None or c.name in keys}
        await upsert_rows(recorder, metadata.tables[table], [row], keys)
        (sql,) = [s for s, _ in recorder.executed]
        assert unsupported(parsed(sql, table)), sql


# --- the RisingWave paths behave as the PostgreSQL ones ---------------------------------------------------


MARKET_READS = [c for c in READS if c.args and c.args[0] == PAIR]
SENTIMENT_OF_THE_COIN = {news.sentiment_at_closes, news.scored_sentiment_at_closes, news.newest_sentiment_at}


@pytest.mark.parametrize(
    ("market", "venue", "pair"),
    [("BTC/USD", "kraken", "BTC/USD"), ("binance:demo.BTC/USDT", "binance", "demo.BTC/USDT")],
)
@pytest.mark.parametrize("call", MARKET_READS, ids=lambda c: key(c.function))
async def test_reads_of_a_market_select_its_venue_and_pair(
    call: Call, market: str, venue: str, pair: str
) -> None:
    # A market read is given a market key (Kraken's is the pair itself) and binds its venue and bare pair.
    bound: list[tuple[str, dict[str, Any]]] = []
    recorder = (AsyncRecorder if inspect.iscoroutinefunction(call.function) else Recorder)(
        "postgres", call.respond
    )
    record = recorder.run

    def run(statement: ClauseElement, params: Any = None) -> Result:
        values = dict(statement.compile(dialect=POSTGRES).params)
        values |= params if isinstance(params, dict) else {}
        result = record(statement, params)
        bound.append((recorder.executed[-1][0], values))
        return result

    recorder.run = run  # type: ignore[method-assign]
    outcome = call.function(recorder, market, *call.args[1:])
    if inspect.isawaitable(outcome):
        await outcome
    markets = [(sql, values) for sql, values in bound if re.search(r"\bpair = ", sql)]
    if call.function in SENTIMENT_OF_THE_COIN:
        # Sentiment is the coin's, the same on every venue.
        assert not markets and any("coin = " in sql for sql, _ in bound), bound
        return
    assert markets, bound
    for sql, values in markets:
        assert re.search(r"\bexchange = ", sql), sql
        named = sorted(str(v) for k, v in values.items() if k.startswith(("exchange", "pair")))
        assert named == sorted([venue, pair]), (sql, values)


async def test_news_de_duplication_on_risingwave_inserts_and_returns_only_unseen_items() -> None:
    stored = namedtuple("stored", "id")
    recorder = AsyncRecorder("risingwave", lambda sql: [stored("n1")] if sql.startswith("SELECT") else [])
    items = [ITEM, ITEM.model_copy(update={"id": "n2"}), ITEM.model_copy(update={"id": "n2"})]
    assert await news.insert_news_items(recorder, items) == ["n2"]
    (insert,) = [params for sql, params in recorder.executed if sql.startswith("INSERT INTO news_items")]
    assert [row["id"] for row in insert] == ["n2"]
    (outbox,) = [params for sql, params in recorder.executed if sql.startswith("INSERT INTO news_scoring")]
    assert [(row["news_id"], row["finished_at"]) for row in outbox] == [("n2", None)]
    recorder = AsyncRecorder(
        "risingwave", lambda sql: [stored("n1"), stored("n2")] if "SELECT" in sql else []
    )
    assert await news.insert_news_items(recorder, items) == []
    assert not [sql for sql, _ in recorder.executed if sql.startswith("INSERT")]


def test_interval_adaptation_on_risingwave_counts_new_outcomes_into_the_state_read() -> None:
    recorder = Recorder("risingwave", adaptation_rows)
    result = adaptation.adapt_interval_level(recorder, "m", "3", 0.8, 0.1)
    assert (result.outcomes, result.misses) == (11, 3)
    assert result.level == pytest.approx(1 - (0.2 + 0.1 * (1 - 0.8 - 1)))  # a miss widens the interval
    ((_, row),) = [(sql, params) for sql, params in recorder.executed if sql.startswith("INSERT")]
    assert (
        row["model_name"] == "m"
        and row["model_version"] == "3"
        and row["through"] == T0 + timedelta(minutes=1)
    )
    assert (row["outcomes"], row["misses"]) == (11, 3) and row["alpha"] == pytest.approx(1 - result.level)
    # Nothing new: nothing written.
    recorder = Recorder(
        "risingwave", lambda sql: [STATE(0.2, 10, 2, T0)] if "interval_adaptation" in sql else []
    )
    assert adaptation.adapt_interval_level(recorder, "m", "3", 0.8, 0.1).outcomes == 10
    assert not [sql for sql, _ in recorder.executed if sql.startswith("INSERT")]
    # A new version starts at the nominal level, and its row is made.
    recorder = Recorder("risingwave", no_rows)
    assert adaptation.adapt_interval_level(recorder, "m", "4", 0.8, 0.1).level == pytest.approx(0.8)
    ((_, row),) = [(sql, params) for sql, params in recorder.executed if sql.startswith("INSERT")]
    assert (row["alpha"], row["outcomes"], row["misses"], row["through"]) == (pytest.approx(0.2), 0, 0, None)


# --- the dialect reaches the writes -------------------------------------------------------------------------


def test_the_store_dialect_setting_makes_engines_of_that_dialect() -> None:
    assert get_args(StoreSettings.model_fields["dialect"].annotation) == get_args(StoreDialect)
    settings = PostgresSettings()
    for dialect in get_args(StoreDialect):
        engine, engine_async = sync_engine(settings, dialect), async_engine(settings, dialect)
        assert store_dialect(engine) == store_dialect(engine_async) == dialect
    # No transactions on RisingWave (a BEGIN is accepted and ignored): its engines do not send them.
    assert engine_options("risingwave")["isolation_level"] == "AUTOCOMMIT"
    assert "isolation_level" not in engine_options("postgres")
    assert store_dialect(sync_engine(settings)) == "postgres"


def test_risingwave_turns_the_sink_off() -> None:
    assert StoreSettings().dialect == "postgres" and StoreSettings().sink_enabled
    assert not StoreSettings(dialect="risingwave").sink_enabled
    with pytest.raises(ValueError, match="sink_enabled must be false"):
        StoreSettings(dialect="risingwave", sink_enabled=True)


# --- the dashboards -----------------------------------------------------------------------------------------

VARIABLES = {
    "exchange": "kraken",
    "pair": PAIR,
    "interval_s": "60",
    "horizon_s": "60",
    "window": "60",
    "name": "x",
}


def test_every_dashboard_query_of_the_feature_store_parses_in_risingwave(generate: ModuleType) -> None:
    queries = {n: s for n, s in generate.SQL_QUERIES.items() if s.datasource.uid == "cryptopredict-features"}
    assert queries
    for name, spec in queries.items():
        sql = generate.substitute_sql(spec.sql, T0, T0 + timedelta(hours=6), VARIABLES)
        statement = parsed(sql, name)
        assert isinstance(statement, exp.Query), name
        assert not unsupported(statement), name
