from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from cryptopredict.ml.splits import final_split, walk_forward_folds

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def at_minutes(offsets) -> pd.Series:
    return pd.Series([T0 + MINUTE * int(m) for m in offsets])


def with_holes(n_rows: int, seed: int) -> pd.Series:
    """n_rows minute stamps with about a fifth of the minutes (some in runs) missing."""
    rng = np.random.default_rng(seed)
    kept = np.flatnonzero(rng.random(2 * n_rows) > 0.2)
    kept = kept[(kept < 60) | (kept > 90)]  # one long hole as well
    return at_minutes(kept[:n_rows])


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("horizon", "embargo"), [(MINUTE, timedelta(0)), (MINUTE * 5, MINUTE * 3)])
def test_walk_forward_never_trains_on_a_target_at_or_after_validation_start(seed, horizon, embargo):
    times = with_holes(400, seed)
    for fold in walk_forward_folds(times, n_folds=5, horizon=horizon, embargo=embargo, min_train_rows=10):
        validation_start = times.iloc[fold.validation[0]]
        assert (times.iloc[fold.train] + horizon + embargo < validation_start).all()
        # Everything not purged is kept: the purge drops only what it must.
        before = times.iloc[: fold.validation[0]]
        assert len(fold.train) == int((before + horizon + embargo < validation_start).sum())


def test_embargo_removes_exactly_the_rows_within_it_before_the_purge_boundary():
    times = at_minutes(range(100))  # blocks of 20 rows
    plain = walk_forward_folds(times, n_folds=4, horizon=MINUTE * 3, embargo=timedelta(0), min_train_rows=1)
    embargoed = walk_forward_folds(times, n_folds=4, horizon=MINUTE * 3, embargo=MINUTE * 2, min_train_rows=1)
    # Validation on minutes 40..59: t + 3 < 40 keeps 0..36; with the embargo t + 5 < 40 keeps 0..34.
    assert plain[1].validation.tolist() == list(range(40, 60))
    assert plain[1].train.tolist() == list(range(37))
    assert embargoed[1].train.tolist() == list(range(35))
    assert [len(f.train) for f in embargoed] == [15, 35, 55, 75]


def test_validation_blocks_are_disjoint_ordered_and_cover_the_tail():
    times = at_minutes(range(103))
    folds = walk_forward_folds(times, n_folds=4, horizon=MINUTE, embargo=timedelta(0), min_train_rows=1)
    assert len(folds) == 4
    validations = np.concatenate([f.validation for f in folds])
    first_block = 103 - len(validations)
    assert validations.tolist() == list(range(first_block, 103))
    assert first_block == 21  # np.array_split of 103 into 5: sizes 21, 21, 21, 20, 20
    for fold in folds:
        assert (np.diff(fold.train) > 0).all() and (np.diff(fold.validation) == 1).all()
        assert fold.train.max() < fold.validation.min()
    assert all(len(a.train) < len(b.train) for a, b in itertools.pairwise(folds))


def test_holes_are_purged_by_time_not_by_row_count():
    # Minutes 0..29 then 32..61: the validation block starts at row 30, which is minute 32.
    times = at_minutes([*range(30), *range(32, 62)])
    (fold,) = walk_forward_folds(times, n_folds=1, horizon=MINUTE * 5, embargo=timedelta(0), min_train_rows=1)
    # t + 5 < 32 keeps minutes 0..26; counting 5 rows back would have kept only 25.
    assert fold.train.tolist() == list(range(27))
    # A hole longer than the horizon right before validation means nothing needs purging.
    times = at_minutes([*range(50), *range(100, 150)])
    (fold,) = walk_forward_folds(times, n_folds=1, horizon=MINUTE * 5, embargo=timedelta(0), min_train_rows=1)
    assert fold.train.tolist() == list(range(50))


def test_folds_with_too_little_training_are_skipped_and_none_left_raises():
    times = at_minutes(range(60))  # six blocks of ten
    folds = walk_forward_folds(times, n_folds=5, horizon=MINUTE, embargo=timedelta(0), min_train_rows=25)
    assert [f.validation[0] for f in folds] == [30, 40, 50]
    with pytest.raises(ValueError, match="no fold has 100 training rows"):
        walk_forward_folds(times, n_folds=5, horizon=MINUTE, embargo=timedelta(0), min_train_rows=100)
    with pytest.raises(ValueError, match="cannot be cut"):
        walk_forward_folds(times.iloc[:3], n_folds=5, horizon=MINUTE, embargo=timedelta(0), min_train_rows=1)


def test_time_representations_give_the_same_folds():
    series = with_holes(200, seed=7)
    as_index = pd.DatetimeIndex(series)
    as_numpy = series.dt.tz_convert(None).to_numpy().astype("datetime64[s]")
    as_other_zone = series.dt.tz_convert("America/New_York")
    results = [
        walk_forward_folds(t, n_folds=3, horizon=MINUTE * 2, embargo=MINUTE, min_train_rows=1)
        for t in (series, as_index, as_numpy, as_other_zone)
    ]
    for folds in results[1:]:
        for got, expected in zip(folds, results[0], strict=True):
            assert np.array_equal(got.train, expected.train)
            assert np.array_equal(got.validation, expected.validation)


def test_bad_arguments_raise():
    times = at_minutes(range(50))
    with pytest.raises(ValueError, match="increasing"):
        walk_forward_folds(times[::-1], n_folds=2, horizon=MINUTE, embargo=timedelta(0), min_train_rows=1)
    with pytest.raises(ValueError, match="horizon"):
        final_split(times, test_fraction=0.2, horizon=timedelta(0))
    with pytest.raises(ValueError, match="embargo"):
        walk_forward_folds(times, n_folds=2, horizon=MINUTE, embargo=-MINUTE, min_train_rows=1)
    with pytest.raises(ValueError, match="n_folds"):
        walk_forward_folds(times, n_folds=0, horizon=MINUTE, embargo=timedelta(0), min_train_rows=1)


def test_final_split_holds_out_the_newest_rows_and_purges_the_boundary():
    fold = final_split(at_minutes(range(100)), test_fraction=0.2, horizon=MINUTE * 3)
    assert fold.validation.tolist() == list(range(80, 100))
    assert fold.train.tolist() == list(range(77))  # t + 3 < 80


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("horizon_minutes", [1, 4, 15])
def test_final_split_never_leaks_with_holes(seed, horizon_minutes):
    times = with_holes(300, seed)
    horizon = MINUTE * horizon_minutes
    fold = final_split(times, test_fraction=0.25, horizon=horizon)
    test_start = times.iloc[fold.validation[0]]
    assert fold.validation.tolist() == list(range(300 - 75, 300))
    assert (times.iloc[fold.train] + horizon < test_start).all()
    assert len(fold.train) == int((times.iloc[: fold.validation[0]] + horizon < test_start).sum())


def test_final_split_refuses_too_few_rows():
    with pytest.raises(ValueError, match="too few"):
        final_split(at_minutes([0]), test_fraction=0.5, horizon=MINUTE)
    with pytest.raises(ValueError, match="no training rows left"):
        final_split(at_minutes(range(4)), test_fraction=0.5, horizon=MINUTE * 5)
    with pytest.raises(ValueError, match="test_fraction"):
        final_split(at_minutes(range(10)), test_fraction=1.0, horizon=MINUTE)
