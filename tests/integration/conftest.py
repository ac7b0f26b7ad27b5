"""Integration tests run against the real local stack, started once per session by the launcher."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cryptopredict import stack
from cryptopredict.settings import Settings, get_settings


@pytest.fixture(scope="session")
def settings() -> Settings:
    return get_settings()


@pytest.fixture(scope="session", autouse=True)
def local_stack(settings: Settings) -> Iterator[list[stack.ComponentStatus]]:
    # Left running afterwards: a warm stack makes the next session start in about a second.
    yield stack.up(settings)
