"""On a year of real Kraken BTC/USD hours, walk-forward: the volatility-scaled Mondrian interval keeps
its coverage in calm and wild hours alike, where one width for all hours does not, and HAR forecasts
the next day's volatility better than the trailing mean."""

import pandas as pd
import pytest

from cryptopredict.ml.backtest import interval_figures, load_hours, volatility_figures, walk_forward

pytestmark = [pytest.mark.realdata, pytest.mark.unit]


def test_adaptive_intervals_and_har_on_real_hours(shared_data):
    close = load_hours(shared_data / "kraken" / "XBTUSD_60.csv", "2018-01-01")
    price, vol = walk_forward(close, close.index[-1] - pd.Timedelta(days=365))
    intervals, volatility = interval_figures(price), volatility_figures(vol)
    adaptive, constant = intervals["adaptive"], intervals["const"]
    assert all(abs(adaptive[third] - 0.8) < 0.04 for third in ("calm", "mid", "wild")), adaptive
    assert constant["wild"] < 0.75 < constant["calm"]  # the measured imbalance of today's interval
    assert adaptive["winkler"] < constant["winkler"]
    assert volatility["skill_vs_naive"] > 0 and volatility["negative_or_nan"] == 0
