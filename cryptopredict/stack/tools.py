"""grpcurl and tctl, built with `go install` from the pinned module in infra/go-tools."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

from cryptopredict.stack.base import REPO_ROOT, StackError, find_cmd

logger = logging.getLogger(__name__)

GO_MODULE_DIR = REPO_ROOT / "infra" / "go-tools"
# `go install pkg@version` fails here (the proxy refuses version lists), so the versions are
# pinned in go.mod and installed from inside that module.
PACKAGES = {
    "grpcurl": "github.com/fullstorydev/grpcurl/cmd/grpcurl",
    "tctl": "github.com/temporalio/tctl/cmd/tctl",
}


def install_go_tools(bin_dir: Path) -> dict[str, Path]:
    binaries = {name: bin_dir / name for name in PACKAGES}
    missing = [name for name, path in binaries.items() if not path.exists()]
    if not missing:
        return binaries
    go = find_cmd([Path("/usr/local/go/bin/go")], "go")
    bin_dir.mkdir(parents=True, exist_ok=True)
    logger.info("installing %s with %s into %s", ", ".join(missing), go, bin_dir)
    env = {**os.environ, "GOBIN": str(bin_dir), "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    result = subprocess.run(
        [str(go), "install", *(PACKAGES[name] for name in missing)],
        cwd=GO_MODULE_DIR,
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise StackError(f"go install failed:\n{result.stdout}\n{result.stderr}")
    return binaries
