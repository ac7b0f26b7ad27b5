"""Retention: what the RetentionWorkflow prunes, decided here from listings and a cutoff (pure functions,
tests/unit/test_retention_rules.py), and the steps that list and delete.

- predictions and dead letters: rows of the feature store older than the cutoff, deleted in batches of
  `batch_rows`, each its own statement and transaction, so a months-old backlog never holds a long lock.
  In the RisingWave mode those tables are fed from their topics by RisingWave itself: skipped.
- late trades live only in Kafka (topic `late_trades`, dead letters of the candle builder): the step sets
  the topic's `retention.ms` from the age, and the broker deletes old segments.
- Optuna studies whose last trial is older than the cutoff, none with a trial still running and none of
  a TrainingWorkflow still running (a study's name holds its retrain's run id).
- MLflow versions created before the cutoff, except every version holding an alias (the champion, the
  challenger) and the last two entries of the champion history (the champion and the one a rollback
  returns to); the deleted versions leave the history too, so a later rollback never lands on a version
  that is gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from cryptopredict import workflow_types
from cryptopredict.models.retention import PruneCount, PruneRequest
from cryptopredict.settings import Settings
from cryptopredict.topics import LATE_TRADES, split_market, topic_name

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from temporalio.client import Client

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]
DAY_MS = 86_400_000
RISINGWAVE_SKIP = (
    "skipped: store.dialect is risingwave, whose {table} table is fed from its topic by RisingWave; "
    "bound it with the topic's retention instead"
)


def retention_ms(days: float) -> str:
    """Kafka's `retention.ms` for an age in days."""
    return str(round(days * DAY_MS))


# --- MLflow versions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionListing:
    version: str
    created: datetime


def protected_versions(aliased: Iterable[str], history: Sequence[str]) -> set[str]:
    """Versions never pruned: every aliased one, and the last two champions of the history (the current
    one and the one a rollback returns to; the last two even when the alias was moved by hand)."""
    return {str(v) for v in aliased} | {str(v) for v in history[-2:]}


def versions_to_delete(
    versions: Sequence[VersionListing], aliased: Iterable[str], history: Sequence[str], cutoff: datetime
) -> tuple[list[str], int]:
    """(versions to delete, oldest first; how many old ones are kept because they are protected)."""
    keep = protected_versions(aliased, history)
    old = sorted((v for v in versions if v.created < cutoff), key=lambda v: (v.created, _number(v.version)))
    return [v.version for v in old if v.version not in keep], sum(1 for v in old if v.version in keep)


def history_without(history: Sequence[str], deleted: Iterable[str]) -> list[str]:
    gone = set(deleted)
    return [v for v in history if v not in gone]


def _number(version: str) -> int:
    return int(version) if version.isdigit() else 0


def prune_model_versions(settings: Settings, request: PruneRequest, progress: Progress) -> PruneCount:
    from mlflow import MlflowClient

    client = MlflowClient(settings.mlflow.tracking_uri)
    deleted = kept = models = 0
    for name in registered_models(client, request.scope.model_prefix):
        models += 1
        progress(f"model {name}")
        gone, protected = _prune_model(client, name, request.cutoff)
        deleted, kept = deleted + len(gone), kept + protected
        if gone:
            logger.info("%s: deleted versions %s", name, ", ".join(gone))
    return PruneCount(kind="mlflow_versions", deleted=deleted, kept=kept, detail=f"{models} models")


def _prune_model(client: MlflowClient, name: str, cutoff: datetime) -> tuple[list[str], int]:
    from cryptopredict.ml.registry import HISTORY_TAG, champion_history

    model = client.get_registered_model(name)
    listed = [
        VersionListing(str(v.version), datetime.fromtimestamp(v.creation_timestamp / 1000, UTC))
        for v in _all_versions(client, name)
    ]
    doomed, kept = versions_to_delete(listed, model.aliases.values(), champion_history(client, name), cutoff)
    for version in doomed:
        client.delete_model_version(name, version)
    # Read again just before writing: a promotion since the listing has appended to it.
    history = champion_history(client, name)
    if set(doomed) & set(history):
        client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history_without(history, doomed)))
    return doomed, kept


def registered_models(client: MlflowClient, prefix: str | None) -> list[str]:
    names: list[str] = []
    token = None
    while True:
        # LIKE's own wildcards in a prefix are escaped away by checking the prefix again below.
        page = client.search_registered_models(
            filter_string=None if prefix is None else f"name LIKE '{_quoted(prefix)}%'",
            max_results=500,
            page_token=token,
        )
        names += [m.name for m in page if prefix is None or m.name.startswith(prefix)]
        token = page.token
        if not token:
            return names


def _all_versions(client: MlflowClient, name: str) -> list[Any]:
    versions: list[Any] = []
    token = None
    while True:
        page = client.search_model_versions(f"name = '{_quoted(name)}'", max_results=1000, page_token=token)
        versions += list(page)
        token = page.token
        if not token:
            return versions


def _quoted(value: str) -> str:
    return value.replace("'", "''")


# --- Optuna studies ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyListing:
    name: str
    # When its newest trial started or ended; None for a study without trials (its age is unknown).
    last_activity: datetime | None
    unfinished_trials: int


def studies_to_delete(
    studies: Sequence[StudyListing], running_run_ids: Iterable[str], cutoff: datetime
) -> tuple[list[str], int]:
    """(studies to delete; how many old ones are kept because a trial or their retrain still runs).
    A study without trials has no age and is kept."""
    running = [run_id for run_id in running_run_ids if run_id]
    doomed, kept = [], 0
    for study in studies:
        if study.last_activity is None or study.last_activity >= cutoff:
            continue
        if study.unfinished_trials or any(run_id in study.name for run_id in running):
            kept += 1
        else:
            doomed.append(study.name)
    return doomed, kept


# Studies deleted per thread call, between heartbeats.
STUDIES_PER_CALL = 50
# Optuna writes naive local times; one row per study with its newest trial time and its unfinished trials.
STUDY_LISTING = text(
    """
    SELECT s.study_name,
           max(greatest(t.datetime_start, t.datetime_complete)) AS last_activity,
           count(*) FILTER (WHERE t.state IN ('RUNNING', 'WAITING')) AS unfinished
    FROM studies s LEFT JOIN trials t ON t.study_id = s.study_id
    WHERE s.study_name LIKE :pattern
    GROUP BY s.study_name
    """
)


def list_studies(storage_url: str, prefix: str | None) -> list[StudyListing]:
    engine = create_engine(storage_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            if not engine.dialect.has_table(connection, "studies"):
                return []  # Optuna has never run against this database
            pattern = (prefix or "").replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            rows = connection.execute(STUDY_LISTING, {"pattern": pattern}).all()
    finally:
        engine.dispose()
    return [
        StudyListing(name, None if last is None else last.astimezone(UTC), int(unfinished))
        for name, last, unfinished in rows
    ]


async def running_retrain_run_ids(client: Client) -> list[str]:
    query = f"WorkflowType = '{workflow_types.TRAINING}' AND ExecutionStatus = 'Running'"
    return [execution.run_id async for execution in client.list_workflows(query) if execution.run_id]


async def prune_studies(
    settings: Settings, client: Client, request: PruneRequest, progress: Progress
) -> PruneCount:
    """Lists the running retrains first: a retrain started after that has no study older than the cutoff."""
    running = await running_retrain_run_ids(client)
    url = settings.postgres.optuna_storage_url
    studies = await asyncio.to_thread(list_studies, url, request.scope.study_prefix)
    doomed, kept = studies_to_delete(studies, running, request.cutoff)
    for start in range(0, len(doomed), STUDIES_PER_CALL):
        await asyncio.to_thread(_delete_studies, url, doomed[start : start + STUDIES_PER_CALL])
        progress(f"{start + len(doomed[start : start + STUDIES_PER_CALL])} studies deleted")
    return PruneCount(
        kind="optuna_studies",
        deleted=len(doomed),
        kept=kept,
        detail=f"{len(studies)} studies, {len(running)} retrains running",
    )


def _delete_studies(storage_url: str, names: Sequence[str]) -> None:
    if not names:
        return
    import optuna

    storage = optuna.storages.RDBStorage(storage_url)
    try:
        for name in names:
            try:
                optuna.delete_study(study_name=name, storage=storage)
            except KeyError:  # deleted meanwhile (a retried step)
                pass
    finally:
        storage.engine.dispose()


# --- feature store rows -----------------------------------------------------------------------------------

# Each statement deletes at most :batch rows found through their physical row ids: a TID scan, so a batch
# costs its own rows, not a scan of the table, and its locks last one short statement.
DELETE_PREDICTIONS = """
    DELETE FROM predictions WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM predictions WHERE target_time < :cutoff {scope} LIMIT :batch))
"""
DELETE_DEAD_LETTERS = """
    DELETE FROM dead_letters WHERE id = ANY(ARRAY(
        SELECT id FROM dead_letters WHERE at < :cutoff {scope} ORDER BY id LIMIT :batch))
"""


def delete_statement(template: str, column: str, values: Sequence[str] | None) -> tuple[Any, dict[str, Any]]:
    """The batch delete, narrowed to `column` in `values` when given (a test's own rows)."""
    if values is None:
        return text(template.format(scope="")), {}
    return text(template.format(scope=f"AND {column} = ANY(:scope)")), {"scope": list(values)}


# A scope's pairs are market keys (topics.market_key); a row's market is its venue and pair.
SCOPED_MARKET = "exchange || ':' || pair"


def scoped_markets(markets: Sequence[str] | None) -> list[str] | None:
    """Market keys as SCOPED_MARKET spells them: `kraken:BTC/USD`, `coinbase:BTC/USD`."""
    return None if markets is None else [":".join(split_market(m)) for m in markets]


def prune_predictions(settings: Settings, request: PruneRequest, progress: Progress) -> PruneCount:
    markets = scoped_markets(request.scope.pairs)
    statement, params = delete_statement(DELETE_PREDICTIONS, SCOPED_MARKET, markets)
    return _prune_rows(settings, request, "predictions", statement, params, progress)


def prune_dead_letters(settings: Settings, request: PruneRequest, progress: Progress) -> PruneCount:
    statement, params = delete_statement(DELETE_DEAD_LETTERS, "source", request.scope.dead_letter_sources)
    return _prune_rows(settings, request, "dead_letters", statement, params, progress)


def _prune_rows(
    settings: Settings,
    request: PruneRequest,
    table: str,
    statement: Any,
    params: dict[str, Any],
    progress: Progress,
) -> PruneCount:
    if settings.store.dialect == "risingwave":
        detail = RISINGWAVE_SKIP.format(table=table)
        logger.warning("retention of %s %s", table, detail)
        return PruneCount(kind=request.kind, detail=detail)
    from cryptopredict.store.candles import sync_engine

    engine = sync_engine(settings.postgres)
    deleted = batches = 0
    try:
        while True:
            with engine.begin() as connection:
                rows = connection.execute(
                    statement, params | {"cutoff": request.cutoff, "batch": request.batch_rows}
                ).rowcount
            deleted, batches = deleted + rows, batches + 1
            progress(f"{table}: {deleted} deleted")
            if rows < request.batch_rows:
                break
    finally:
        engine.dispose()
    return PruneCount(kind=request.kind, deleted=deleted, detail=f"{batches} batches")


# --- late trades ------------------------------------------------------------------------------------------


async def set_late_trades_retention(settings: Settings, request: PruneRequest) -> PruneCount:
    """Late trades are only in Kafka: the broker deletes them once the topic's retention.ms has passed."""
    from cryptopredict.kafka_admin import ensure_topic_config

    prefix = settings.kafka.topic_prefix if request.scope.topic_prefix is None else request.scope.topic_prefix
    topic = topic_name(LATE_TRADES, prefix)
    value = retention_ms(request.age_days)
    changed = await ensure_topic_config(settings.kafka, [topic], {"retention.ms": value})
    state = "set" if changed else "unchanged (set already, or no such topic yet)"
    return PruneCount(kind=request.kind, detail=f"topic {topic} retention.ms={value} {state}")
