"""Optuna studies in the stack's PostgreSQL: two workers running batches of one study at once both add
trials to it and it ends with exactly the sum of their budgets, and a trial left RUNNING by a killed
worker is failed instead of blocking."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from cryptopredict.ml.tuning import BATCH, best_of, optuna_storage, run_trials

pytestmark = pytest.mark.integration


def data(n: int = 200, k: int = 4) -> tuple[pd.DataFrame, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(n, k)), columns=[f"f{i}" for i in range(k)])
    y = X.to_numpy() @ rng.normal(scale=1e-3, size=k) + rng.normal(scale=1e-3, size=n)
    blocks = np.array_split(np.arange(n), 3)
    return X, y, [(np.arange(block[0]), block) for block in blocks[1:]]


def test_two_concurrent_batches_fill_one_study_to_exactly_their_budgets(settings):
    url = settings.postgres.optuna_storage_url
    study_name = f"test-concurrent-{uuid.uuid4().hex[:12]}"
    X, y, folds = data()
    optuna_storage(url).engine.dispose()  # creates Optuna's tables once, not in a race between the workers
    both_started = threading.Barrier(2, timeout=60)
    contributed: list[list[int]] = [[], []]

    def worker(index: int) -> int:
        def on_trial(number: int, mae: float) -> None:
            contributed[index].append(number)
            if len(contributed[index]) == 1:
                both_started.wait()  # neither worker can finish the study before the other joined it

        return run_trials(
            "linear",
            X,
            y,
            folds,
            storage=url,
            study_name=study_name,
            n_trials=8,
            timeout_s=120,
            seed=3,
            batch=index,
            on_trial=on_trial,
        )

    with ThreadPoolExecutor(max_workers=2) as pool:
        reported = list(pool.map(worker, [0, 1]))

    study = optuna.load_study(study_name=study_name, storage=url)
    complete = [trial.number for trial in study.get_trials(states=(TrialState.COMPLETE,))]
    assert all(contributed), contributed
    assert sorted(complete) == sorted(contributed[0] + contributed[1])
    assert reported == [8, 8] and len(complete) == 16
    assert best_of("linear", storage=url, study_name=study_name).n_trials_completed == 16


# The test plays the killed worker by hand, outside Study.optimize.
@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_a_trial_left_running_by_a_killed_worker_is_failed_and_does_not_block(settings):
    url = settings.postgres.optuna_storage_url
    study_name = f"test-stale-{uuid.uuid4().hex[:12]}"
    X, y, folds = data()
    storage = optuna_storage(url, heartbeat_interval_s=1, grace_period_s=1)
    try:
        study = optuna.create_study(storage=storage, study_name=study_name, direction="minimize")
        dead = study.ask()  # a worker takes a trial of batch 0, beats once and is killed
        dead.set_user_attr(BATCH, 0)
        storage.record_heartbeat(dead._trial_id)
        time.sleep(1.5)
        held = run_trials(
            "linear", X, y, folds, storage=storage, study_name=study_name, n_trials=3, timeout_s=60, seed=0
        )
        assert held == 3
        assert storage.get_trial(dead._trial_id).state == TrialState.FAIL
    finally:
        storage.engine.dispose()
