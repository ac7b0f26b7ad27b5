"""Go programs built with `go install` from pinned modules: grpcurl and tctl for the stack (infra/go-tools),
the stream edge (infra/stream-edge), the Temporal TLS relay (infra/temporal-relay), the unary load generator
and the stream subscribers for bench/ (infra/go-bench), and Helm for the chart's checks (infra/helm-tool)."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
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
    "stream-subscribers": (REPO_ROOT / "infra" / "go-bench", "cryptopredict/bench/cmd/stream-subscribers"),
    "unary-load": (REPO_ROOT / "infra" / "go-bench", "cryptopredict/bench/cmd/unary-load"),
    "stream-edge": (REPO_ROOT / "infra" / "stream-edge", "cryptopredict/stream-edge"),
    "temporal-relay": (REPO_ROOT / "infra" / "temporal-relay", "cryptopredict/temporal-relay"),
    "helm": (REPO_ROOT / "infra" / "helm-tool", "helm.sh/helm/v4/cmd/helm"),
}
STACK_TOOLS = ("grpcurl", "tctl")

# Linker flags per tool ({version}: the pinned version of the tool's module). Helm reports the version it
# was released as only when told (its own Makefile does the same); -s -w drop the symbol tables.
GO_LDFLAGS: dict[str, str] = {
    "helm": "-s -w -X helm.sh/helm/v4/internal/version.version={version}",
}


def tool_cache_root() -> Path:
    """Where tools built once per version live, outside any clone: $XDG_CACHE_HOME (or ~/.cache)
    /cryptopredict/tools."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cryptopredict" / "tools"


def install_go_tools(bin_dir: Path, names: Iterable[str] = STACK_TOOLS) -> dict[str, Path]:
    """The named tools in `bin_dir`, built where missing or out of date."""
    bin_dir = bin_dir.resolve()  # go install wants an absolute GOBIN
    binaries = {name: bin_dir / name for name in names}
    missing = [name for name, path in binaries.items() if _stale(path, GO_TOOLS[name][0])]
    if not missing:
        return binaries
    bin_dir.mkdir(parents=True, exist_ok=True)
    logger.info("installing %s into %s", ", ".join(missing), bin_dir)
    for module_dir in sorted({GO_TOOLS[name][0] for name in missing}):
        names = [name for name in missing if GO_TOOLS[name][0] == module_dir]
        plain = [name for name in names if name not in GO_LDFLAGS]
        if plain:
            _go_install(module_dir, [GO_TOOLS[name][1] for name in plain], bin_dir)
        for name in names:
            if name in GO_LDFLAGS:  # linker flags apply to every package of one `go install`
                _go_install(module_dir, [GO_TOOLS[name][1]], bin_dir, _ldflags(name))
    for name in missing:  # go install leaves a binary that is already up to date untouched
        binaries[name].touch()
    return binaries


def cached_go_tool(name: str, cache_root: Path | None = None) -> Path:
    """`name` built once per pinned version, in `<cache_root>/<name>-<version>-<digest>/` (default:
    `tool_cache_root()`), so that fresh clones (CI makes one per run) share it instead of rebuilding.

    The folder is named by the module's pin, not by file times (a fresh clone's files are all new): the
    version from go.mod and a digest of go.mod and go.sum. A build goes to a temporary folder beside it
    and is renamed into place whole, so an interrupted build or a second process building the same
    version never leaves a half-written binary there."""
    module_dir, package = GO_TOOLS[name]
    root = (cache_root or tool_cache_root()).resolve()
    binary = root / f"{name}-{module_version(module_dir, package)}-{_pin_digest(module_dir)}" / name
    if binary.is_file():
        return binary
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide the tool from other users
    try:
        logger.info("building %s into %s (once per version)", name, binary.parent)
        _go_install(module_dir, [package], staging, _ldflags(name) if name in GO_LDFLAGS else None)
        try:
            staging.rename(binary.parent)
        except OSError:
            if not binary.is_file():  # not another process that finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return binary


def helm_binary() -> Path:
    """Helm v4 as pinned in infra/helm-tool/go.mod, built once per version (`cached_go_tool`)."""
    return cached_go_tool("helm")


def module_version(module_dir: Path, package: str) -> str:
    """The version go.mod in `module_dir` requires of the module that holds `package`; "local" for a
    package of the module itself."""
    required = dict(
        re.findall(r"^\s*(?:require\s+)?(\S+)\s+(v\S+)", (module_dir / "go.mod").read_text(), re.M)
    )
    holders = [module for module in required if package == module or package.startswith(module + "/")]
    return required[max(holders, key=len)] if holders else "local"


def _pin_digest(module_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        path = module_dir / name
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()[:12]


def _ldflags(name: str) -> str:
    module_dir, package = GO_TOOLS[name]
    return GO_LDFLAGS[name].format(version=module_version(module_dir, package))


def _go_install(module_dir: Path, packages: list[str], bin_dir: Path, ldflags: str | None = None) -> None:
    go = find_cmd([Path("/usr/local/go/bin/go")], "go")
    env = {**os.environ, "GOBIN": str(bin_dir.resolve()), "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    flags = [f"-ldflags={ldflags}"] if ldflags else []
    result = subprocess.run(
        [str(go), "install", *flags, *packages], cwd=module_dir, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise StackError(f"go install failed:\n{result.stdout}\n{result.stderr}")


def edge_binary(settings: Settings) -> Path:
    """The stream edge's executable in .local/bin, built from infra/stream-edge when missing or out of date."""
    return install_go_tools(settings.local_dir.resolve() / "bin", ["stream-edge"])["stream-edge"]


def _stale(binary: Path, module_dir: Path) -> bool:
    """Missing, or older than a file of its module (a changed pin or our own Go source)."""
    if not binary.exists():
        return True
    built = binary.stat().st_mtime
    return any(f.stat().st_mtime > built for f in module_dir.rglob("*") if f.is_file())
