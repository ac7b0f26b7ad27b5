"""Shared machinery of the local stack: paths, detached processes, pid files, health waiting."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from cryptopredict.settings import Settings, is_loopback

logger = logging.getLogger(__name__)

# Bounds one health probe, so a half-open port cannot stall `up` or `status`.
PROBE_TIMEOUT_S = 5.0
REPO_ROOT = Path(__file__).resolve().parents[2]


class StackError(RuntimeError):
    """A component could not be installed, started or reached."""


@dataclass
class ComponentStatus:
    name: str
    managed: bool
    pid: int | None
    healthy: bool
    endpoint: str
    log: Path
    detail: str = ""
    rss_bytes: int | None = None
    # Seconds from spawn to healthy of the latest start we did.
    start_seconds: float | None = None


@dataclass(frozen=True)
class StackPaths:
    root: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> StackPaths:
        return cls(settings.local_dir.expanduser().resolve())

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def data(self, name: str) -> Path:
        return self.root / name

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def pid_file(self, name: str) -> Path:
        return self.run / f"{name}.pid"

    def timing_file(self, name: str) -> Path:
        return self.run / f"{name}.timing.json"


class Component(ABC):
    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()
    startup_timeout_s: ClassVar[float] = 60.0
    stop_signal: ClassVar[int] = signal.SIGTERM

    def __init__(self, settings: Settings, paths: StackPaths) -> None:
        self.settings = settings
        self.paths = paths

    @classmethod
    def enabled_for(cls, settings: Settings) -> bool:
        """Whether these settings run this component at all (the Temporal TLS relay: cluster profile only)."""
        return True

    @property
    def data_dir(self) -> Path:
        return self.paths.data(self.name)

    @property
    def log_path(self) -> Path:
        return self.paths.log(self.name)

    @property
    @abstractmethod
    def host(self) -> str: ...

    @property
    @abstractmethod
    def endpoint(self) -> str: ...

    @property
    def is_external(self) -> bool:
        return not is_loopback(self.host)

    def install(self) -> None:  # noqa: B027 -- optional hook
        """Fetch whatever the component needs to run; must be a no-op when already present."""

    def prepare(self) -> None:  # noqa: B027 -- optional hook
        """Write config and initialise data before each start (idempotent)."""

    @abstractmethod
    def start_cmd(self) -> list[str]: ...

    def start_env(self) -> dict[str, str]:
        return {}

    def spawn_kwargs(self) -> dict[str, Any]:
        """Extra Popen arguments, e.g. the user to run as."""
        return {}

    @abstractmethod
    def cmdline_marker(self) -> str:
        """A string found in /proc/<pid>/cmdline of the process we started, and nowhere else."""

    @abstractmethod
    async def health(self) -> str:
        """Raise if the component does not answer a real request; return a short detail."""

    async def after_healthy(self) -> None:  # noqa: B027 -- optional hook
        """Create what the app expects to exist (topics, databases); must be idempotent."""

    async def probe(self) -> tuple[bool, str]:
        try:
            detail = await asyncio.wait_for(self.health(), PROBE_TIMEOUT_S)
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}".strip()
        return True, detail


# --- processes ---------------------------------------------------------------------------------


def read_cmdline(pid: int) -> str | None:
    """The process's command line, or None if it is gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if not raw:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace")


def live_pid(component: Component) -> int | None:
    """Pid from the pid file if that process still runs what we started there."""
    pid_file = component.paths.pid_file(component.name)
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    cmdline = read_cmdline(pid)
    if cmdline is None or component.cmdline_marker() not in cmdline:
        return None
    return pid


_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")


def redact_urls(text: str) -> str:
    """Hides the passwords of URLs (a database URL on a command line) in text that is logged."""
    return _URL_PASSWORD.sub(r"\1***@", text)


def clear_stale_pid(component: Component) -> None:
    pid_file = component.paths.pid_file(component.name)
    if pid_file.exists() and live_pid(component) is None:
        logger.info("%s: removing stale pid file %s", component.name, pid_file)
        pid_file.unlink(missing_ok=True)


def spawn(component: Component) -> subprocess.Popen[bytes]:
    paths = component.paths
    paths.run.mkdir(parents=True, exist_ok=True)
    paths.logs.mkdir(parents=True, exist_ok=True)
    cmd = component.start_cmd()
    env = {**os.environ, **component.start_env()}
    shown = redact_urls(" ".join(cmd))
    logger.info("%s: starting %s", component.name, shown)
    with component.log_path.open("ab") as log:
        log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {shown}\n".encode())
        log.flush()
        # A new session detaches it from our terminal and process group, so it outlives the CLI
        # call and `down` can signal the whole tree it forks.
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=component.data_dir,
            start_new_session=True,
            **component.spawn_kwargs(),
        )
    paths.pid_file(component.name).write_text(f"{proc.pid}\n")
    return proc


def process_tree_rss(pid: int) -> int | None:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


def stop_process_group(component: Component, pid: int, timeout_s: float = 20.0) -> None:
    pgid = os.getpgid(pid)
    if pgid != pid:
        # We start every component as a session leader; anything else is not ours to group-kill.
        raise StackError(f"{component.name}: pid {pid} is not a process-group leader, refusing to kill")
    logger.info("%s: stopping pid %s", component.name, pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, component.stop_signal)
    if _wait_group_gone(pgid, timeout_s):
        return
    logger.warning("%s: still running after %.0f s, sending SIGKILL", component.name, timeout_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    _wait_group_gone(pgid, 5.0)


def _wait_group_gone(pgid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _reap_if_child(pgid)
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def _reap_if_child(pid: int) -> None:
    # When this same Python process spawned it, it is our child: reap it, or it lingers as a
    # zombie and still counts as a member of its process group.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


# --- waiting ------------------------------------------------------------------------------------


async def wait_healthy(component: Component, proc: subprocess.Popen[bytes] | None) -> str:
    deadline = time.monotonic() + component.startup_timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StackError(
                f"{component.name} exited with code {proc.returncode} while starting; "
                f"see {component.log_path}\n{log_tail(component.log_path)}"
            )
        ok, detail = await component.probe()
        if ok:
            return detail
        last = detail
        await asyncio.sleep(0.5)
    raise StackError(
        f"{component.name} not healthy after {component.startup_timeout_s:.0f} s ({last}); "
        f"see {component.log_path}\n{log_tail(component.log_path)}"
    )


def log_tail(path: Path, lines: int = 15) -> str:
    return "\n".join(tail_lines(path, lines))


def tail_lines(path: Path, lines: int) -> list[str]:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 256 * 1024))
            data = fh.read()
    except OSError:
        return []
    return data.decode(errors="replace").splitlines()[-lines:]


def write_timing(component: Component, seconds: float) -> None:
    component.paths.timing_file(component.name).write_text(json.dumps({"start_seconds": seconds}))


def read_timing(component: Component) -> float | None:
    try:
        return float(json.loads(component.paths.timing_file(component.name).read_text())["start_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def url_host_port(url: str, default_port: int) -> tuple[str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def find_cmd(candidates: Sequence[Path], name: str) -> Path:
    import shutil

    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    if found is None:
        raise StackError(f"{name} not found (looked in {', '.join(map(str, candidates))} and PATH)")
    return Path(found)
