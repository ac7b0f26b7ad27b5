"""What retention deletes and keeps, decided from listings and a cutoff (cryptopredict.retention)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cryptopredict.models.retention import PRUNE_KINDS, PruneRequest, RetentionAges
from cryptopredict.orchestration import retention_input
from cryptopredict.retention import (
    DELETE_PREDICTIONS,
    SCOPED_MARKET,
    StudyListing,
    VersionListing,
    delete_statement,
    history_without,
    protected_versions,
    prune_predictions,
    retention_ms,
    scoped_markets,
    studies_to_delete,
    versions_to_delete,
)
from cryptopredict.settings import RetentionSettings, Settings

pytestmark = pytest.mark.unit

NOW = datetime(2026, 6, 1, tzinfo=UTC)
CUTOFF = NOW - timedelta(days=90)


def listing(*ages_days: float) -> list[VersionListing]:
    """Versions 1, 2, ... created `age` days before NOW."""
    return [VersionListing(str(i), NOW - timedelta(days=age)) for i, age in enumerate(ages_days, start=1)]


def test_old_versions_go_but_never_the_champion_the_previous_champion_or_an_aliased_one():
    versions = listing(400, 300, 200, 150, 120, 10)
    # v2 was champion before v4, v4 before v5 (the champion); v3 is the challenger.
    doomed, kept = versions_to_delete(versions, {"5", "3"}, ["1", "2", "4", "5"], CUTOFF)
    assert doomed == ["1", "2"]  # v4 is the previous champion, v6 is young
    assert kept == 3  # v3, v4 and v5 are old but protected


def test_a_version_younger_than_the_age_stays_whatever_it_is():
    doomed, kept = versions_to_delete(listing(89, 1), [], [], CUTOFF)
    assert doomed == [] and kept == 0


def test_a_champion_moved_by_hand_keeps_the_last_two_of_the_history_too():
    assert protected_versions(["7"], ["3", "5"]) == {"3", "5", "7"}
    assert protected_versions([], ["9"]) == {"9"}


def test_deleted_versions_leave_the_history_so_a_rollback_never_lands_on_a_missing_one():
    assert history_without(["1", "2", "4", "2", "5"], ["1", "2"]) == ["4", "5"]


def test_versions_go_oldest_first_with_numeric_order_on_equal_times():
    t = NOW - timedelta(days=100)
    versions = [VersionListing("10", t), VersionListing("9", t), VersionListing("2", t - timedelta(days=1))]
    assert versions_to_delete(versions, [], [], CUTOFF)[0] == ["2", "9", "10"]


def study(name: str, age_days: float | None, unfinished: int = 0) -> StudyListing:
    last = None if age_days is None else NOW - timedelta(days=age_days)
    return StudyListing(name, last, unfinished)


def test_finished_old_studies_go_but_not_those_of_a_running_retrain_or_with_running_trials():
    studies = [
        study("training-BTCUSD-60s-h1-run-a-linear", 40),
        study("training-BTCUSD-60s-h1-run-b-xgboost", 40),  # its retrain still runs
        study("training-ETHUSD-60s-h1-run-c-linear", 40, unfinished=1),
        study("training-ETHUSD-60s-h1-run-d-linear", 5),  # young
        study("training-ETHUSD-60s-h1-run-e-linear", None),  # no trials: no age
    ]
    doomed, kept = studies_to_delete(studies, ["run-b", ""], NOW - timedelta(days=30))
    assert doomed == ["training-BTCUSD-60s-h1-run-a-linear"]
    assert kept == 2


def test_late_trades_retention_is_the_age_in_milliseconds():
    assert retention_ms(7) == "604800000"
    assert retention_ms(0.5) == "43200000"


def test_a_scoped_delete_names_its_rows_and_an_unscoped_one_every_row():
    everything, none = delete_statement(DELETE_PREDICTIONS, "pair", None)
    assert "ANY(:scope)" not in str(everything) and none == {}
    scoped, params = delete_statement(DELETE_PREDICTIONS, "pair", ["T1/USD"])
    assert "AND pair = ANY(:scope)" in str(scoped) and params == {"scope": ["T1/USD"]}
    assert "LIMIT :batch" in str(scoped)
    # A scope's pairs are market keys; each names its venue (Kraken's key is the pair itself).
    assert scoped_markets(["T1/USD", "coinbase:t.T1/USD"]) == ["kraken:T1/USD", "coinbase:t.T1/USD"]
    assert scoped_markets(None) is None
    scoped, _ = delete_statement(DELETE_PREDICTIONS, SCOPED_MARKET, ["kraken:T1/USD"])
    assert "AND exchange || ':' || pair = ANY(:scope)" in str(scoped)


def test_the_scheduled_input_carries_the_settings_ages_and_zero_turns_a_kind_off():
    settings = Settings(
        retention=RetentionSettings(predictions_days=0, mlflow_versions_days=45, batch_rows=7)
    )
    request = retention_input(settings)
    assert request.ages.days("predictions") == 0 and request.ages.days("mlflow_versions") == 45
    assert request.batch_rows == 7 and request.scope.pairs is None and request.scope.model_prefix is None
    defaults = RetentionAges()
    assert {kind: RetentionSettings().model_dump()[f"{kind}_days"] for kind in PRUNE_KINDS} == {
        kind: defaults.days(kind) for kind in PRUNE_KINDS
    }


def test_the_risingwave_mode_skips_the_store_steps_with_the_reason_and_connects_to_nothing():
    settings = Settings.model_validate(
        {
            "store": {"dialect": "risingwave"},
            "postgres": {
                "url": "postgresql://u@unreachable.invalid:1/db",
                "metadata_url": "postgresql://u@x:1/m",
            },
        }
    )
    request = PruneRequest(kind="predictions", cutoff=CUTOFF, age_days=90)
    count = prune_predictions(settings, request, lambda _: None)
    assert count.deleted == 0 and "risingwave" in count.detail and "predictions" in count.detail
