"""Local stack launcher: installs, starts, checks and stops the services the app talks to.

Every component runs as a detached local process with its state under ``settings.local_dir``
(data in ``<component>/``, logs in ``logs/``, pid files in ``run/``, tools in ``bin/``). An
endpoint whose host is not loopback is external: it is only checked, never started.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import threading
import time
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from cryptopredict.settings import Settings
from cryptopredict.stack.base import (
    Component,
    ComponentStatus,
    StackError,
    StackPaths,
    clear_stale_pid,
    live_pid,
    process_tree_rss,
    read_timing,
    spawn,
    stop_process_group,
    wait_healthy,
    write_timing,
)
from cryptopredict.stack.kafka import Kafka
from cryptopredict.stack.kafka_cluster import kafka_nodes
from cryptopredict.stack.llm import Llm
from cryptopredict.stack.mlflow import Mlflow
from cryptopredict.stack.postgres import Postgres
from cryptopredict.stack.prometheus import Prometheus
from cryptopredict.stack.temporal import Temporal
from cryptopredict.stack.temporal_relay import TemporalRelay
from cryptopredict.stack.tools import install_go_tools

__all__ = [
    "COMPONENT_NAMES",
    "ComponentStatus",
    "StackError",
    "down",
    "install_tools",
    "logs_path",
    "status",
    "up",
]

logger = logging.getLogger(__name__)

# Start order; `requires` adds the ordering constraints that matter (mlflow after postgres). A component
# runs only where `enabled_for(settings)` (the Temporal TLS relay: in the cluster profile).
COMPONENT_CLASSES: tuple[type[Component], ...] = (
    Postgres,
    Kafka,
    Temporal,
    TemporalRelay,
    Mlflow,
    Llm,
    Prometheus,
)
COMPONENT_NAMES: tuple[str, ...] = tuple(cls.name for cls in COMPONENT_CLASSES)

T = TypeVar("T")


def build_components(settings: Settings, disabled_too: bool = False) -> dict[str, Component]:
    paths = StackPaths.from_settings(settings)
    components: list[Component] = []
    for cls in COMPONENT_CLASSES:
        if disabled_too or cls.enabled_for(settings):
            components.append(cls(settings, paths))
        if cls is Kafka:
            # Kafka as a cluster (the cluster profile): a component per node, named kafka-1, kafka-2, ...
            components += kafka_nodes(settings, paths, made_too=disabled_too)
    return {component.name: component for component in components}


def up(settings: Settings, only: Sequence[str] | None = None) -> list[ComponentStatus]:
    """Start every component (or `only` these, plus what they require) that is not yet healthy."""
    components = build_components(settings)
    selected = _with_requirements(components, only)
    paths = StackPaths.from_settings(settings)
    with _stack_lock(paths):
        tools = _start_tools_install(settings) if only is None else None
        statuses = _run(_up_all([components[name] for name in selected]))
        if tools is not None:
            tools.join()
    return statuses


def status(settings: Settings) -> list[ComponentStatus]:
    components = build_components(settings)
    return _run(_status_all(list(components.values())))


def down(settings: Settings, only: Sequence[str] | None = None) -> None:
    """Stop the processes this launcher started (or `only` these); data under local_dir is kept."""
    from concurrent.futures import ThreadPoolExecutor

    # Disabled ones too: what another profile started here is stopped all the same.
    components = build_components(settings, disabled_too=True)
    if only is not None:
        only = _expand_kafka(components, only)
        _check_names(only, components)
        components = {name: c for name, c in components.items() if name in only}
    # Dependents stop concurrently (each takes seconds), then what they depend on.
    required = {dep for c in components.values() for dep in c.requires}
    waves = [
        [c for c in components.values() if c.name not in required],
        [c for c in components.values() if c.name in required],
    ]
    with _stack_lock(StackPaths.from_settings(settings)), ThreadPoolExecutor(max(1, len(components))) as pool:
        for wave in waves:
            list(pool.map(_stop, wave))


def _stop(component: Component) -> None:
    pid = live_pid(component)
    if pid is not None:
        stop_process_group(component, pid)
    elif component.paths.pid_file(component.name).exists():
        logger.info("%s: pid file is stale, nothing to stop", component.name)
    component.paths.pid_file(component.name).unlink(missing_ok=True)


def logs_path(settings: Settings, name: str) -> Path:
    _check_names([name], build_components(settings, disabled_too=True))
    return StackPaths.from_settings(settings).log(name)


def install_tools(settings: Settings) -> dict[str, Path]:
    """Build grpcurl and tctl into local_dir/bin (skipped when they exist)."""
    return install_go_tools(StackPaths.from_settings(settings).bin)


# --- up -----------------------------------------------------------------------------------------


async def _up_all(components: list[Component]) -> list[ComponentStatus]:
    # Independent components start concurrently; a component waits only for what it requires.
    tasks: dict[str, asyncio.Task[ComponentStatus]] = {}
    for component in components:
        deps = [tasks[name] for name in component.requires if name in tasks]
        tasks[component.name] = asyncio.create_task(_ensure_after(component, deps))
    results = await asyncio.gather(*tasks.values(), return_exceptions=True)
    errors = [str(r) for r in results if isinstance(r, BaseException)]
    if errors:
        raise StackError("stack up failed:\n" + "\n\n".join(errors))
    return [r for r in results if isinstance(r, ComponentStatus)]


async def _ensure_after(component: Component, deps: list[asyncio.Task[ComponentStatus]]) -> ComponentStatus:
    for dep in deps:
        try:
            await asyncio.shield(dep)
        except Exception as exc:
            raise StackError(f"{component.name}: not started because a requirement failed") from exc
    return await _ensure(component)


async def _ensure(component: Component) -> ComponentStatus:
    if component.is_external:
        return await _ensure_external(component)
    pid = live_pid(component)
    if pid is not None:
        detail = await wait_healthy(component, None)
        await component.after_healthy()
        return _status_of(component, pid, True, detail)
    clear_stale_pid(component)
    ok, detail = await component.probe()
    if ok:
        logger.info("%s: %s already answers and is not ours; using it", component.name, component.endpoint)
        await component.after_healthy()
        return _status_of(component, None, True, f"not started by us; {detail}")
    return await _start(component)


async def _ensure_external(component: Component) -> ComponentStatus:
    ok, detail = await component.probe()
    if not ok:
        raise StackError(
            f"{component.name}: external endpoint {component.endpoint} does not answer: {detail}"
        )
    try:
        await component.after_healthy()
    except Exception as exc:
        # External services are provisioned by their owners; we only try to help.
        logger.warning(
            "%s: could not create expected resources on %s: %s", component.name, component.endpoint, exc
        )
    return _status_of(component, None, True, f"external; {detail}")


async def _start(component: Component) -> ComponentStatus:
    for directory in (component.paths.logs, component.paths.run, component.data_dir):
        directory.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(component.install)
    await asyncio.to_thread(component.prepare)
    started = time.monotonic()
    proc = spawn(component)
    try:
        detail = await wait_healthy(component, proc)
    except StackError:
        if proc.poll() is not None:
            component.paths.pid_file(component.name).unlink(missing_ok=True)
        raise
    elapsed = time.monotonic() - started
    write_timing(component, elapsed)
    logger.info("%s: healthy after %.1f s (%s)", component.name, elapsed, detail)
    await component.after_healthy()
    return _status_of(component, proc.pid, True, detail)


def _start_tools_install(settings: Settings) -> threading.Thread:
    def install() -> None:
        try:
            install_tools(settings)
        except Exception as exc:
            # Handy CLI tools, not needed by the app: a machine without Go still gets a stack.
            logger.warning("grpcurl/tctl not installed: %s", exc)

    thread = threading.Thread(target=install, name="stack-tools", daemon=True)
    thread.start()
    return thread


# --- status -------------------------------------------------------------------------------------


async def _status_all(components: list[Component]) -> list[ComponentStatus]:
    return list(await asyncio.gather(*(_status_one(c) for c in components)))


async def _status_one(component: Component) -> ComponentStatus:
    pid = None if component.is_external else live_pid(component)
    ok, detail = await component.probe()
    if component.is_external:
        detail = f"external; {detail}"
    elif pid is None and ok:
        detail = f"not started by us; {detail}"
    elif pid is None:
        detail = f"not running; {detail}"
    return _status_of(component, pid, ok, detail)


def _status_of(component: Component, pid: int | None, healthy: bool, detail: str) -> ComponentStatus:
    managed = pid is not None
    return ComponentStatus(
        name=component.name,
        managed=managed,
        pid=pid,
        healthy=healthy,
        endpoint=component.endpoint,
        log=component.log_path,
        detail=detail,
        rss_bytes=process_tree_rss(pid) if pid is not None else None,
        start_seconds=read_timing(component) if managed else None,
    )


# --- helpers ------------------------------------------------------------------------------------


def _check_names(names: Sequence[str], components: dict[str, Component] | None = None) -> None:
    known = list(dict.fromkeys([*COMPONENT_NAMES, *(components or {})]))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise StackError(f"unknown component(s) {', '.join(unknown)}; known: {', '.join(known)}")


def _expand_kafka(components: dict[str, Component], names: Sequence[str]) -> list[str]:
    """The name "kafka" stands for the Kafka of these settings: the single node or the cluster's nodes
    (never the other one, which `down` also knows about)."""
    expanded: list[str] = []
    for name in names:
        if name == Kafka.name:
            expanded += [
                n for n, c in components.items() if isinstance(c, Kafka) and c.enabled_for(c.settings)
            ]
        else:
            expanded.append(name)
    return list(dict.fromkeys(expanded))


def _with_requirements(components: dict[str, Component], only: Sequence[str] | None) -> list[str]:
    if not only:
        return list(components)
    only = _expand_kafka(components, only)
    _check_names(only, components)
    wanted: set[str] = set()
    pending = list(only)
    while pending:
        name = pending.pop()
        if name not in components:
            raise StackError(f"{name} is not used with these settings")
        if name not in wanted:
            wanted.add(name)
            pending.extend(components[name].requires)
    return [name for name in components if name in wanted]


@contextlib.contextmanager
def _stack_lock(paths: StackPaths) -> Iterator[None]:
    # Two `up`s at once (say, two test sessions) would both see "not running" and both start.
    paths.run.mkdir(parents=True, exist_ok=True)
    with (paths.run / "stack.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from sync code, even when the caller already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="stack-async")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]
