"""Agreement with the `ta` library, as the indicator tests (unit and through the broker) check it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cryptopredict.features.indicators import WARM_UP, IndicatorConfig, atr_name

REL_TOL = 1e-9


def assert_matches_ta(ours: pd.DataFrame, reference: pd.DataFrame, config: IndicatorConfig) -> float:
    """Every column within REL_TOL of ta where both have a value, and NaN exactly where ta has NaN.

    The one exception is ta's ATR before its first full window: ta returns 0.0 there, we return None.
    Returns the largest relative difference seen.
    """
    assert list(ours.columns) == [*reference.columns, WARM_UP]
    assert ours.index.equals(reference.index)
    worst = 0.0
    for column in reference.columns:
        a, b = ours[column].to_numpy(), reference[column].to_numpy()
        if column == atr_name(config.atr_window):
            warm = config.atr_window - 1
            assert np.all(b[:warm] == 0.0) and np.all(np.isnan(a[:warm])), column
            a, b = a[warm:], b[warm:]
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=column)
        both = ~np.isnan(b)
        diff = np.abs(a[both] - b[both])
        scale = np.maximum(np.abs(a[both]), np.abs(b[both]))
        rel = np.divide(diff, scale, out=np.zeros_like(diff), where=diff > 0)
        assert rel.max(initial=0.0) <= REL_TOL, (column, rel.max())
        worst = max(worst, float(rel.max(initial=0.0)))
    return worst
