"""The layers of [tool.importlinter] in pyproject.toml hold for every module of cryptopredict.

The core contract lists the core module by module (a forbidden contract cannot leave the entry points,
launcher and simulators out of `cryptopredict`), so a new module of cryptopredict must be added there or
be one of those three; and no core module, the package's own `__init__` included, imports an adapter or
one of them (the same rule lint-imports checks, here for every module found, listed or not).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import grimp
import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "cryptopredict"
OUTSIDE_CORE = {"cryptopredict.cli", "cryptopredict.stack", "cryptopredict.simulators"}
ADAPTERS = {"streams", "grpc_server", "workflows", "activities"}
CORE_CONTRACT = "The domain core imports no adapter, entry point, launcher or simulator"


def core_contract() -> dict[str, list[str]]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    return next(c for c in config["contracts"] if c["name"] == CORE_CONTRACT)


def top_level_modules() -> set[str]:
    """Every module and subpackage directly under cryptopredict/ (namespace packages too)."""
    names = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    names |= {p.name for p in PACKAGE.iterdir() if p.is_dir() and any(p.rglob("*.py"))}
    return {f"cryptopredict.{name}" for name in names}


def outside(module: str) -> bool:
    return any(module == top or module.startswith(f"{top}.") for top in OUTSIDE_CORE | ADAPTERS)


def test_every_module_of_cryptopredict_is_in_the_core_contract_or_outside_the_core() -> None:
    contract = core_contract()
    listed, modules = set(contract["source_modules"]), top_level_modules()
    unlisted, missing = sorted(modules - listed - OUTSIDE_CORE), sorted(listed - modules)
    assert not unlisted, f"add {unlisted} to the core contract's source_modules in pyproject.toml"
    assert not missing, f"{missing}: in the core contract but not in cryptopredict/"
    assert OUTSIDE_CORE | ADAPTERS <= set(contract["forbidden_modules"])


def test_no_core_module_imports_an_adapter_entry_point_launcher_or_simulator() -> None:
    graph = grimp.build_graph("cryptopredict", *sorted(ADAPTERS), cache_dir=None)
    core = {m for m in graph.find_descendants("cryptopredict") | {"cryptopredict"} if not outside(m)}
    illegal = sorted(
        f"{m} -> {i}" for m in core for i in graph.find_modules_directly_imported_by(m) if outside(i)
    )
    assert not illegal
