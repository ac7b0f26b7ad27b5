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
OUTSIDE_CORE = {"cryptopredict.cli", "cryptopredict.stack", "cryptopredict.simulators", "cryptopredict.drill"}
ADAPTERS = {"streams", "grpc_server", "workflows", "activities"}
CORE_CONTRACT = "The domain core imports no adapter, entry point, launcher, simulator or drill"


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


LAYERS = [
    "cryptopredict.cli",
    "cryptopredict.stack",
    "cryptopredict.simulators",
    "cryptopredict.drill",
    *sorted(ADAPTERS),
]


def layer_of(module: str) -> str:
    for layer in LAYERS:
        if module == layer or module.startswith(f"{layer}."):
            return layer.removeprefix("cryptopredict.")
    return "core"


def import_graph_mermaid() -> str:
    """Which layer imports which, as the mermaid graph docs/development.md shows."""
    graph = grimp.build_graph("cryptopredict", *sorted(ADAPTERS), cache_dir=None)
    edges = {
        (layer_of(m), layer_of(i))
        for m in graph.modules
        for i in graph.find_modules_directly_imported_by(m)
        if layer_of(m) != layer_of(i)
    }
    return "\n".join(["```mermaid", "graph TD", *(f"  {a} --> {b}" for a, b in sorted(edges)), "```"])


def test_the_documented_import_graph_is_the_code_s() -> None:
    graph = import_graph_mermaid()
    assert not any(edge.startswith("  core -->") for edge in graph.splitlines())
    assert graph in (REPO / "docs" / "development.md").read_text(), (
        "docs/development.md's import graph is stale: paste `python tests/unit/test_layers.py`"
    )


if __name__ == "__main__":
    print(import_graph_mermaid())
