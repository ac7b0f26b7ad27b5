"""Start time and memory of each local stack component: `stack down` then `stack up`, repeated.

Usage: .venv/bin/python bench/stack_startup.py [--quick]  (quick: one cycle instead of three)
Prints a table, writes docs/benchmarks.md, ends with one JSON line:
{"up_seconds": ..., "components": {"kafka": {"start_seconds": ..., "rss_mb": ...}, ...}}
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import publish
from cryptopredict import stack
from cryptopredict.settings import get_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    settings = get_settings()
    cycles = 1 if args.quick else 3
    stack.up(settings)  # installs on a fresh machine; not part of the figures
    up_seconds: list[float] = []
    starts: dict[str, list[float]] = {}
    rss: dict[str, list[float]] = {}
    for cycle in range(cycles):
        stack.down(settings)
        began = time.monotonic()
        stack.up(settings)
        up_seconds.append(time.monotonic() - began)
        time.sleep(5)  # let memory settle after start-up
        for status in stack.status(settings):
            starts.setdefault(status.name, []).append(status.start_seconds or float("nan"))
            rss.setdefault(status.name, []).append((status.rss_bytes or 0) / 2**20)
        print(f"cycle {cycle + 1}/{cycles}: up in {up_seconds[-1]:.1f}s", file=sys.stderr)
    components = {
        name: {
            "start_seconds": round(statistics.median(starts[name]), 2),
            "rss_mb": round(statistics.median(rss[name])),
        }
        for name in starts
    }
    rows = "\n".join(
        f"| {name} | {c['start_seconds']:.1f} | {c['rss_mb']} |" for name, c in components.items()
    )
    body = (
        f"Warm restart (`stack down` then `stack up`), median of {cycles} cycle(s). Components start in parallel "
        "(MLflow after PostgreSQL), so `up` takes about as long as the slowest one. RSS is summed over each "
        "component's process tree (PostgreSQL's shared buffers are counted once per backend, so its figure "
        "is an overestimate).\n\n"
        f"`stack up` total: {statistics.median(up_seconds):.1f} s\n\n"
        "| component | spawn to healthy (s) | RSS (MB) |\n|---|---|---|\n" + rows
    )
    command = "python bench/stack_startup.py" + (" --quick" if args.quick else "")
    publish(
        "Local stack start-up",
        command,
        body,
        {"up_seconds": round(statistics.median(up_seconds), 2), "components": components},
    )


if __name__ == "__main__":
    main()
