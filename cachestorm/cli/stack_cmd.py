"""`cachestorm up | status | down`: the embedded stack that later commands use."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from cachestorm.cli import options
from cachestorm.core.errors import CachestormError
from cachestorm.stack import (
    StackSettings,
    clear_state,
    guardian,
    health,
    load_state,
    save_state,
    start_stack,
    state_lock,
    state_path,
    stop_stack,
    validate_stack_settings,
)

console = Console()


def up(
    redis_url: str = options.REDIS_URL,
    postgres_url: str = options.POSTGRES_URL,
    toxiproxy_url: str = options.TOXIPROXY_URL,
    allow_remote: bool = options.ALLOW_REMOTE,
    as_json: bool = typer.Option(False, "--json", help="Print the endpoints as JSON."),
) -> None:
    """Start Redis, PostgreSQL and the chaos proxy on free loopback ports."""
    # guarded while it starts: a SIGKILLed `up` leaves no half-started stack; once saved, the stack is
    # the state file's (closing the guardian releases it)
    settings = StackSettings(redis_url, postgres_url, toxiproxy_url, allow_remote=allow_remote)
    validate_stack_settings(settings)  # before anything is written into this folder
    with state_lock(), guardian.guarded("up"):
        existing = load_state()
        if existing is not None:
            raise CachestormError(f"a stack is already up ({state_path()}); run `cachestorm down` first")
        state = start_stack(settings)
        try:
            save_state(state)
        except BaseException:
            stop_stack(state)
            raise
    if as_json:
        typer.echo(json.dumps(state.endpoints()))
        return
    table = Table(title="cachestorm stack is up", show_header=True)
    table.add_column("endpoint")
    table.add_column("url")
    for name, url in state.endpoints().items():
        table.add_row(name, url)
    console.print(table)
    console.print(f"state: {state_path()}   stop with: cachestorm down")


def status(as_json: bool = typer.Option(False, "--json", help="Print health as JSON.")) -> None:
    """Check each part of the stack started by `cachestorm up`."""
    state = load_state()
    if state is None:
        raise CachestormError("no stack is up in this folder; start one with `cachestorm up`", exit_code=1)
    results = health(state)
    if as_json:
        typer.echo(json.dumps({name: {"healthy": ok, "detail": detail} for name, (ok, detail) in results.items()}))
    else:
        table = Table(title="cachestorm stack")
        table.add_column("part")
        table.add_column("health")
        table.add_column("detail")
        for name, (ok, detail) in results.items():
            table.add_row(name, "[green]ok[/]" if ok else "[red]down[/]", detail)
        console.print(table)
    if not all(ok for ok, _ in results.values()):
        raise typer.Exit(1)


def down() -> None:
    """Stop what `up` started (graceful, then forced) and delete its data, and whatever a killed run left
    in this folder. Safe to run twice."""
    if not state_path().parent.exists():
        console.print("nothing to stop: no stack is up in this folder")
        return
    with state_lock():
        state = load_state()
        stopped = None
        if state is not None:
            stopped = stop_stack(state)
            clear_state()
        left, running = guardian.clean_abandoned()
    for pid in running:
        console.print(f"left alone: run {pid} is still running (Ctrl-C it; it stops what it started)")
    if left:
        console.print(f"stopped what a killed run left: {', '.join(left)}")
    if state is None and not left:
        console.print("nothing to stop: no stack is up in this folder")
        return
    if stopped is not None:
        console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was still running'}")
