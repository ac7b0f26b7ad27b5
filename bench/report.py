"""Shared output of the bench scripts: a section of docs/benchmarks.md and one final JSON line; and
repeated runs, whose figures are reported as the median with the range over the runs."""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nWritten by the scripts in `bench/`; each section says how to reproduce it.\n"


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, {platform.system()}"


def publish(name: str, command: str, body: str, figures: dict[str, Any]) -> None:
    """Replaces the section `name` of docs/benchmarks.md and prints the figures as one JSON line."""
    section = (
        f"<!-- {name} -->\n## {name}\n\n"
        f"Command: `{command}`  \nMachine: {machine()}  \nRun: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\n"
        f"{body.strip()}\n<!-- /{name} -->\n"
    )
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else HEADER
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->\n", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else f"{text.rstrip()}\n\n{section}"
    BENCHMARKS.parent.mkdir(parents=True, exist_ok=True)
    BENCHMARKS.write_text(text)
    sys.stdout.write(json.dumps(figures) + "\n")


RUNS = 3  # latency figures are the median of this many runs, with their spread
RUN_OUTPUT = "--run-output"  # the option through which a repeated run hands its results back


@dataclass(frozen=True)
class Spread:
    """One figure over repeated runs: each run's value, the median and the range. Formatting it with a
    format spec formats the median, so tables written for one run take it unchanged."""

    runs: tuple[Any, ...]

    @property
    def values(self) -> list[float]:
        return [v for v in self.runs if v == v]  # NaN: a run without the figure

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def low(self) -> float:
        return min(self.values, default=float("nan"))

    @property
    def high(self) -> float:
        return max(self.values, default=float("nan"))

    def __format__(self, spec: str) -> str:
        return format(self.median, spec)

    def __bool__(self) -> bool:
        return bool(self.median)

    def with_range(self, digits: int = 2) -> str:
        """`median (low-high)`, the form docs/benchmarks.md gives a repeated figure in."""
        if not self.values:
            return "n/a"
        return f"{self.median:,.{digits}f} ({self.low:,.{digits}f}-{self.high:,.{digits}f})"

    def within(self, target: float, margin: float = 1.5) -> bool:
        """Met: the median at most `target` and every run at most `margin` x `target`."""
        return len(self.values) == len(self.runs) and self.median <= target and self.high <= margin * target


def across_runs(results: list[Any]) -> Any:
    """Results of repeated runs (the same shape) merged: every number becomes a Spread of its runs'
    values; a text that differs between runs keeps each distinct value, joined."""
    first = results[0]
    if isinstance(first, dict):
        return {key: across_runs([r[key] for r in results]) for key in first}
    if isinstance(first, list) and all(isinstance(r, list) and len(r) == len(first) for r in results):
        return [across_runs(list(items)) for items in zip(*results, strict=True)]
    if isinstance(first, int | float) and not isinstance(first, bool):
        return Spread(tuple(float("nan") if r is None else r for r in results))
    if all(r == first for r in results):
        return first
    return "; ".join(dict.fromkeys(str(r) for r in results))


def median_figures(figures: dict[str, Any], digits: dict[str, int]) -> dict[str, Any]:
    """The final JSON line of a repeated bench: each Spread's median under its name (rounded to
    `digits`), and its runs' values under `<name>_runs`."""
    out: dict[str, Any] = {}
    for name, value in figures.items():
        if isinstance(value, Spread):
            places = digits.get(name, 2)
            # round(x, 0) would keep a float: whole figures (trades/s, counts) print as integers.
            out[name] = round(value.median, places or None) if value.values else None
            out[f"{name}_runs"] = [round(v, places or None) if v == v else None for v in value.runs]
        else:
            out[name] = value
    return out


def repeat_runs(script: Path, args: list[str], runs: int) -> list[Any]:
    """Runs `script` `runs` times, each in a fresh process (its own services and state), and returns
    what each wrote to its RUN_OUTPUT file."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(1, runs + 1):
            print(f"=== run {run} of {runs}", file=sys.stderr, flush=True)
            output = Path(tmp) / f"run-{run}.json"
            subprocess.run([sys.executable, str(script), *args, RUN_OUTPUT, str(output)], check=True)
            results.append(json.loads(output.read_text()))
    return results
