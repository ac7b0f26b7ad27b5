"""Shared output of the bench scripts: a section of docs/benchmarks.md and one final JSON line."""

from __future__ import annotations

import json
import os
import platform
import re
import sys
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
