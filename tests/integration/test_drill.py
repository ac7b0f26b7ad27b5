"""The drill's CI profile (`cryptopredict drill --ci`): PostgreSQL stopped and the stream worker killed -9,
10 s each, on the whole live pipeline; every check against the seeded replay's uninterrupted run passes.
It stops PostgreSQL for 10 s: other tests running against the same stack meanwhile may see it away."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cryptopredict.drill.runner import CI_FAULTS, CI_OUTAGE_S, run_drill
from cryptopredict.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]


async def test_the_ci_drill_loses_and_duplicates_nothing(settings: Settings, tmp_path: Path) -> None:
    began = time.monotonic()
    results = await run_drill(settings, list(CI_FAULTS), CI_OUTAGE_S, tmp_path, print)
    took = time.monotonic() - began
    print(f"CI drill: {took:.0f} s")
    assert [r.fault for r in results] == list(CI_FAULTS)
    for result in results:
        assert result.passed, f"{result.fault}: {result.failures}"
        assert (result.lost, result.duplicated) == ("0", "0")
        assert result.recover_s is not None and result.user_sees
