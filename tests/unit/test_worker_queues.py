"""`cryptopredict worker --queues ...`: which workers a process runs, which schedules it keeps and whether
it checks the LLM endpoint, with the Temporal client and the workers replaced by fakes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from cryptopredict.settings import Settings
from workflows import worker as worker_module

pytestmark = pytest.mark.unit


@dataclass
class FakeWorker:
    task_queue: str
    ran: list[str] = field(default_factory=list)

    async def run(self) -> None:
        self.ran.append(self.task_queue)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What run_worker did, in order: 'llm-check', 'schedule:<kind>', 'worker:<queue>'."""
    import cryptopredict.llm_endpoint
    import cryptopredict.orchestration

    done: list[str] = []

    async def client(*_: Any, **__: Any) -> object:
        return object()

    def record(name: str, result: Any) -> Any:
        async def step(*_: Any, **__: Any) -> Any:
            done.append(name)
            return result

        return step

    def fake_builder(role: str) -> Any:
        def build(
            _client: object, settings: Settings, *rest: Any, task_queue: str | None = None
        ) -> FakeWorker:
            queue = {
                "training": task_queue or settings.temporal.training_task_queue,
                "news": settings.temporal.news_task_queue,
                "llm": settings.temporal.llm_task_queue,
            }[role]
            done.append(f"worker:{queue}")
            return FakeWorker(queue)

        return build

    monkeypatch.setattr(worker_module, "temporal_client", client)
    monkeypatch.setattr(worker_module, "metrics_runtime", lambda settings: None)
    monkeypatch.setattr(worker_module, "news_activities", lambda settings: object())
    monkeypatch.setattr(worker_module, "build_worker", fake_builder("training"))
    monkeypatch.setattr(worker_module, "build_news_worker", fake_builder("news"))
    monkeypatch.setattr(worker_module, "build_llm_worker", fake_builder("llm"))
    monkeypatch.setattr(cryptopredict.llm_endpoint, "ensure_llm_model", record("llm-check", "other"))
    monkeypatch.setattr(cryptopredict.orchestration, "ensure_news_schedule", record("schedule:news", False))
    monkeypatch.setattr(
        cryptopredict.orchestration, "ensure_training_schedules", record("schedule:retrain", [])
    )
    monkeypatch.setattr(cryptopredict.orchestration, "ensure_drift_schedules", record("schedule:drift", []))
    monkeypatch.setattr(
        cryptopredict.orchestration, "ensure_retention_schedule", record("schedule:retention", False)
    )
    return done


def test_queues_are_parsed_in_a_fixed_order() -> None:
    assert worker_module.parse_queues("llm, training") == ("training", "llm")
    assert worker_module.parse_queues("training,news,llm") == worker_module.QUEUES
    for bad in ("", " , ", "training,gpu"):
        with pytest.raises(ValueError, match="training, news, llm"):
            worker_module.parse_queues(bad)


async def test_every_queue_by_default_as_before(calls: list[str]) -> None:
    await worker_module.run_worker(Settings())
    assert calls == [
        "llm-check",
        "schedule:news",
        "schedule:retrain",
        "schedule:drift",
        "schedule:retention",
        "worker:training",
        "worker:news",
        "worker:llm",
    ]


@pytest.mark.parametrize(
    ("queues", "expected"),
    [
        (["training"], ["schedule:retrain", "schedule:drift", "schedule:retention", "worker:training"]),
        (["news"], ["schedule:news", "worker:news"]),
        (["llm"], ["llm-check", "worker:llm"]),
        (["news", "llm"], ["llm-check", "schedule:news", "worker:news", "worker:llm"]),
    ],
)
async def test_one_queue_keeps_only_its_own_schedules(
    calls: list[str], queues: list[str], expected: list[str]
) -> None:
    await worker_module.run_worker(Settings(), queues)
    assert calls == expected


async def test_a_training_worker_on_a_queue_of_its_own_without_schedules(calls: list[str]) -> None:
    """What `--training-only --task-queue X` did: `--queues training --no-schedules --task-queue X`."""
    await worker_module.run_worker(
        Settings(), ["training"], schedules=False, training_task_queue="training-x"
    )
    assert calls == ["worker:training-x"]


async def test_an_unknown_queue_is_refused_before_connecting(calls: list[str]) -> None:
    with pytest.raises(ValueError, match="unknown task queue"):
        await worker_module.run_worker(Settings(), ["gpu"])
    assert calls == []
