"""`cryptopredict drill`: runs the fault drills (cryptopredict.drill.runner) with a progress display,
prints the table and, for a full run, writes it into docs/reliability.md."""

from __future__ import annotations

import asyncio
import logging
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cryptopredict.drill.runner import (
    CI_FAULTS,
    CI_OUTAGE_S,
    FAULTS,
    HEADER,
    FaultResult,
    markdown_table,
    run_drill,
    table_rows,
)
from cryptopredict.settings import Settings

BEGIN, END = "<!-- drill table: begin -->", "<!-- drill table: end -->"


def run(
    settings: Settings, faults: list[str] | None, outage_s: float | None, ci: bool, report: Path | None
) -> int:
    """Exit code: 0 when every check passed, 1 otherwise."""
    console = Console(stderr=True)
    # The drill stops the broker on purpose: each reconnect attempt of its own clients is not news.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    names = list(faults or (CI_FAULTS if ci else FAULTS))
    outage = outage_s if outage_s is not None else (CI_OUTAGE_S if ci else None)
    began = time.monotonic()
    log_dir = settings.local_dir.resolve() / "logs" / "drill" / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    with console.status("starting the drill...") as status:

        def progress(message: str) -> None:
            console.log(message)
            status.update(f"[{time.monotonic() - began:.0f} s] {message}")

        results = asyncio.run(run_drill(settings, names, outage, log_dir, progress))
    console.print(rich_table(results))
    total_s = time.monotonic() - began
    failed = [r for r in results if not r.passed]
    console.print(
        f"{len(results) - len(failed)} of {len(results)} faults passed in {total_s:.0f} s; logs in {log_dir}"
    )
    if report is not None:
        write_report(report, results, outage, total_s)
        console.print(f"table written to {report}")
    return 1 if failed else 0


def rich_table(results: list[FaultResult]) -> Table:
    table = Table(*HEADER, show_lines=True)
    for row in table_rows(results):
        table.add_row(*row, style=None if row[-1] == "ok" else "red")
    return table


def write_report(path: Path, results: list[FaultResult], outage_s: float | None, total_s: float) -> None:
    """Replaces the table between the markers of `path`."""
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{path} has no {BEGIN} ... {END} markers")
    outage = "each fault's own length" if outage_s is None else f"{outage_s:.0f} s outages"
    body = "\n".join(
        [
            BEGIN,
            f"`cryptopredict drill` ({outage}), {datetime.now(UTC):%Y-%m-%d}, on {platform.node() or 'this machine'}"
            f" ({platform.machine()}, the local stack); {total_s / 60:.0f} minutes in all.",
            "",
            markdown_table(results),
            END,
        ]
    )
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(head + body + tail)
