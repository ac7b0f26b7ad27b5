"""Shared fixtures. Integration and e2e tests use the real local stack, started once per session by
the project's launcher (`cryptopredict stack up`); unit tests never touch it."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import topic_prefixes

from cryptopredict.kafka_admin import delete_topics_under
from cryptopredict.settings import Settings, get_settings

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GRAFANA_GENERATOR = Path(__file__).resolve().parents[1] / "infra" / "grafana" / "generate.py"


@pytest.fixture(scope="session")
def settings() -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
def local_stack(settings: Settings, request: pytest.FixtureRequest) -> Iterator[list]:
    from cryptopredict import stack

    # Left running afterwards: a warm stack makes the next session start in about a second.
    yield stack.up(settings)
    # Left behind, the tests' topics pile up over sessions until the broker's heap runs out (16,000
    # partitions did, at 512 MB): a session that passed deletes the ones under its own run prefixes;
    # after a failure they stay for a person to read.
    if request.session.testsfailed or not topic_prefixes.made:
        return
    try:
        asyncio.run(delete_topics_under(settings.kafka, tuple(topic_prefixes.made)))
    except Exception as exc:  # e.g. a broker a test left down: the topics stay, as after a failure
        warnings.warn(f"test topics not deleted: {exc!r}", stacklevel=1)


@pytest.fixture(scope="session")
def generate() -> ModuleType:
    """infra/grafana/generate.py (a script, not a package module), loaded once."""
    spec = importlib.util.spec_from_file_location("grafana_generate", GRAFANA_GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not present at {SHARED_DATA}")
    return SHARED_DATA
