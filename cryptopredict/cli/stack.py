"""`cryptopredict stack ...`: start, inspect and stop the local services."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from cryptopredict.settings import Settings
    from cryptopredict.stack import ComponentStatus

stack_app = typer.Typer(help="Local stack: Postgres, Kafka, Temporal, MLflow and the LLM endpoint.")

ProfileOption = Annotated[
    str | None,
    typer.Option(
        "--profile",
        help="settings profile from infra/profiles (e.g. cluster); default: $CRYPTOPREDICT_PROFILE",
    ),
]


def _settings(profile: str | None) -> Settings:
    """The profile's settings; the cluster profile's secrets are made here on first use."""
    from pydantic import ValidationError

    from cryptopredict.settings import validation_error_line
    from cryptopredict.stack.profile import load_profile_settings

    try:
        return load_profile_settings(profile)
    except ValidationError as exc:  # settings that cannot work
        typer.secho(validation_error_line(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    except ValueError as exc:  # an unknown profile
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Connection refusals while a service boots are expected; aiokafka logs each one as an error.
    for noisy in ("aiokafka", "kafka", "httpx", "temporalio"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)


def _fmt_rss(rss: int | None) -> str:
    return "-" if rss is None else f"{rss / 2**20:.0f} MB"


def _print_table(statuses: list[ComponentStatus]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="cryptopredict stack")
    for column in ("component", "state", "managed", "pid", "endpoint", "RSS", "start", "detail"):
        table.add_column(column, overflow="fold")
    for s in statuses:
        state = "[green]healthy[/green]" if s.healthy else "[red]down[/red]"
        start = "-" if s.start_seconds is None else f"{s.start_seconds:.1f} s"
        table.add_row(
            s.name,
            state,
            "yes" if s.managed else "no",
            str(s.pid or "-"),
            s.endpoint,
            _fmt_rss(s.rss_bytes),
            start,
            s.detail,
        )
    Console().print(table)


@stack_app.command()
def up(
    only: Annotated[
        list[str] | None, typer.Option("--only", help="start just this component (repeatable)")
    ] = None,
    profile: ProfileOption = None,
) -> None:
    """Install what is missing and start every component that is not healthy yet."""
    from cryptopredict import stack

    _setup_logging()
    started = time.monotonic()
    try:
        statuses = stack.up(_settings(profile), only=only or None)
    except stack.StackError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    _print_table(statuses)
    typer.echo(f"stack up in {time.monotonic() - started:.1f} s")


@stack_app.command()
def status(profile: ProfileOption = None) -> None:
    """Show each component's health, pid, memory and log."""
    from cryptopredict import stack

    _setup_logging()
    statuses = stack.status(_settings(profile))
    _print_table(statuses)
    if not all(s.healthy for s in statuses):
        raise typer.Exit(1)


@stack_app.command()
def down(
    only: Annotated[
        list[str] | None, typer.Option("--only", help="stop just this component (repeatable)")
    ] = None,
    profile: ProfileOption = None,
) -> None:
    """Stop the processes `up` started (data is kept)."""
    from cryptopredict import stack

    _setup_logging()
    try:
        stack.down(_settings(profile), only=only or None)
    except stack.StackError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc


@stack_app.command()
def logs(
    name: Annotated[str, typer.Argument(help="component name")],
    lines: Annotated[int, typer.Option("--lines", "-n", help="lines to show")] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new lines")] = False,
    profile: ProfileOption = None,
) -> None:
    """Print the end of a component's log."""
    from cryptopredict import stack
    from cryptopredict.stack.base import tail_lines

    try:
        path = stack.logs_path(_settings(profile), name)
    except stack.StackError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    if not path.exists():
        typer.secho(f"no log yet at {path}", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(1)
    for line in tail_lines(path, lines):
        typer.echo(line)
    if follow:
        _follow(path)


def _follow(path: Path) -> None:
    with path.open("rb") as fh:
        fh.seek(0, 2)
        try:
            while True:
                chunk = fh.read()
                if chunk:
                    typer.echo(chunk.decode(errors="replace"), nl=False)
                else:
                    time.sleep(0.5)
        except KeyboardInterrupt:
            pass


@stack_app.command()
def tools() -> None:
    """Install grpcurl and tctl into the local bin directory."""
    from cryptopredict import stack
    from cryptopredict.settings import get_settings

    _setup_logging()
    try:
        installed = stack.install_tools(get_settings())
    except stack.StackError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    for name, path in installed.items():
        typer.echo(f"{name}: {path}")
