from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from cryptopredict.features.sentiment import sentiment_features

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def scores(*rows):
    return pd.DataFrame(
        [{"scored_at": T0 + timedelta(minutes=m), "score": s, "confidence": c} for m, s, c in rows]
    )


def test_a_score_made_after_t_never_appears_at_t():
    frame = sentiment_features(scores((-30, 1, 1.0), (5, -1, 1.0)), pd.DatetimeIndex([T0]))
    assert frame.loc[T0, "sentiment_count_1h"] == 1 and frame.loc[T0, "sentiment_mean_1h"] == 1.0
    later = sentiment_features(
        scores((-30, 1, 1.0), (5, -1, 1.0)), pd.DatetimeIndex([T0 + timedelta(minutes=5)])
    )
    assert later.iloc[0]["sentiment_count_1h"] == 2 and later.iloc[0]["sentiment_mean_1h"] == 0.0


def test_windows_are_half_open_and_weighted_by_confidence():
    data = scores((-60, -1, 1.0), (-59, 1, 0.5), (-10, -1, 0.25), (-24 * 60 + 1, 1, 1.0))
    frame = sentiment_features(data, pd.DatetimeIndex([T0]))
    row = frame.iloc[0]
    # 1h: (t - 60 min, t]: the score at exactly -60 min is out; 0.5 * 1 + 0.25 * -1 over 0.75.
    assert row["sentiment_count_1h"] == 2
    assert row["sentiment_mean_1h"] == pytest.approx((0.5 - 0.25) / 0.75)
    assert row["sentiment_count_24h"] == 4


def test_no_scores_in_a_window_is_nan_with_count_zero():
    frame = sentiment_features(scores((-120, 1, 1.0)), pd.DatetimeIndex([T0, T0 - timedelta(hours=3)]))
    assert np.isnan(frame.iloc[0]["sentiment_mean_1h"]) and frame.iloc[0]["sentiment_count_1h"] == 0
    assert frame.iloc[0]["sentiment_count_24h"] == 1
    assert frame.iloc[1]["sentiment_count_24h"] == 0 and np.isnan(frame.iloc[1]["sentiment_mean_24h"])


def test_matches_a_brute_force_count_on_random_scores():
    rng = np.random.default_rng(3)
    data = pd.DataFrame(
        {
            "scored_at": [T0 + timedelta(seconds=int(s)) for s in rng.integers(-200_000, 200_000, 400)],
            "score": rng.integers(-1, 2, 400),
            "confidence": rng.uniform(0, 1, 400),
        }
    )
    times = pd.DatetimeIndex([T0 + timedelta(hours=h) for h in range(-50, 50, 7)])
    frame = sentiment_features(data, times)
    for t in times:
        window = data[(data.scored_at > t - timedelta(hours=24)) & (data.scored_at <= t)]
        assert frame.loc[t, "sentiment_count_24h"] == len(window)
        if len(window):
            expected = (window.score * window.confidence).sum() / window.confidence.sum()
            assert frame.loc[t, "sentiment_mean_24h"] == pytest.approx(expected)
