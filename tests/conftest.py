"""Shared fixtures. Integration and e2e tests use the real local stack, started once per session by
the project's launcher (`cryptopredict stack up`); unit tests never touch it."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from cryptopredict.settings import Settings, get_settings

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GRAFANA_GENERATOR = Path(__file__).resolve().parents[1] / "infra" / "grafana" / "generate.py"


@pytest.fixture(scope="session")
def settings() -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
def local_stack(settings: Settings) -> Iterator[list]:
    from cryptopredict import stack

    # Left running afterwards: a warm stack makes the next session start in about a second.
    yield stack.up(settings)


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
