"""Go programs built with `go install` from pinned modules: grpcurl and tctl for the stack (infra/go-tools),
the stream edge (infra/stream-edge), the Temporal TLS relay (infra/temporal-relay), the ghz load generator
and the stream subscribers for bench/ (infra/go-bench)."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

from cryptopredict.settings import Settings
from cryptopredict.stack.base import REPO_ROOT, StackError, find_cmd

logger = logging.getLogger(__name__)

# `go install pkg@version` fails here (the proxy refuses version lists), so the versions are pinned in
# each module's go.mod and tools are installed from inside their module.
GO_TOOLS: dict[str, tuple[Path, str]] = {
    "grpcurl": (REPO_ROOT / "infra" / "go-tools", "github.com/fullstorydev/grpcurl/cmd/grpcurl"),
    "tctl": (REPO_ROOT / "infra" / "go-tools", "github.com/temporalio/tctl/cmd/tctl"),
    "ghz": (REPO_ROOT / "infra" / "go-bench", "github.com/bojand/ghz/cmd/ghz"),
    "stream-subscribers": (REPO_ROOT / "infra" / "go-bench", "cryptopredict/bench/cmd/stream-subscribers"),
    "stream-edge": (REPO_ROOT / "infra" / "stream-edge", "cryptopredict/stream-edge"),
    "temporal-relay": (REPO_ROOT / "infra" / "temporal-relay", "cryptopredict/temporal-relay"),
}
STACK_TOOLS = ("grpcurl", "tctl")


def install_go_tools(bin_dir: Path, names: Iterable[str] = STACK_TOOLS) -> dict[str, Path]:
    """The named tools in `bin_dir`, built where missing or out of date."""
    bin_dir = bin_dir.resolve()  # go install wants an absolute GOBIN
    binaries = {name: bin_dir / name for name in names}
    missing = [name for name, path in binaries.items() if _stale(path, GO_TOOLS[name][0])]
    if not missing:
        return binaries
    go = find_cmd([Path("/usr/local/go/bin/go")], "go")
    bin_dir.mkdir(parents=True, exist_ok=True)
    logger.info("installing %s with %s into %s", ", ".join(missing), go, bin_dir)
    env = {**os.environ, "GOBIN": str(bin_dir), "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    for module_dir in sorted({GO_TOOLS[name][0] for name in missing}):
        packages = [GO_TOOLS[name][1] for name in missing if GO_TOOLS[name][0] == module_dir]
        result = subprocess.run(
            [str(go), "install", *packages], cwd=module_dir, env=env, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise StackError(f"go install failed:\n{result.stdout}\n{result.stderr}")
    for name in missing:  # go install leaves a binary that is already up to date untouched
        binaries[name].touch()
    return binaries


def edge_binary(settings: Settings) -> Path:
    """The stream edge's executable in .local/bin, built from infra/stream-edge when missing or out of date."""
    return install_go_tools(settings.local_dir.resolve() / "bin", ["stream-edge"])["stream-edge"]


def _stale(binary: Path, module_dir: Path) -> bool:
    """Missing, or older than a file of its module (a changed pin or our own Go source)."""
    if not binary.exists():
        return True
    built = binary.stat().st_mtime
    return any(f.stat().st_mtime > built for f in module_dir.rglob("*") if f.is_file())
