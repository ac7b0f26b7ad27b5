"""Shared fixtures. Integration and e2e tests use the real local stack, started once per session by
the project's launcher (`cryptopredict stack up`); unit tests never touch it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cryptopredict.settings import Settings, get_settings

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def settings() -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
def local_stack(settings: Settings) -> Iterator[list]:
    from cryptopredict import stack

    # Left running afterwards: a warm stack makes the next session start in about a second.
    yield stack.up(settings)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not present at {SHARED_DATA}")
    return SHARED_DATA
