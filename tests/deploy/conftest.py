"""Fixtures of the chart's checks (test_chart.py): Helm v4, built once per pinned version outside the clone
(cryptopredict.stack.tools.helm_binary: minutes the first time, then none), and a runner for it."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def helm() -> Path:
    from cryptopredict.stack.tools import helm_binary

    return helm_binary()


@pytest.fixture(scope="session")
def run_helm(helm: Path) -> Callable[..., str]:
    """`helm ARGS...` in the repository -> its stdout; subprocess.CalledProcessError (with stderr) when it
    fails."""

    def run(*args: str | Path) -> str:
        result = subprocess.run(
            [str(helm), *map(str, args)], capture_output=True, text=True, timeout=120, cwd=REPO
        )
        result.check_returncode()
        return result.stdout

    return run
