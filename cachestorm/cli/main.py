"""The `cachestorm` command: a thin Typer shell over library functions.

Sub-apps live one per file and are listed here by import string (like uvicorn's
name -> import-string tables), so adding one is one line.
"""

from __future__ import annotations

import sys

import typer

from cachestorm.core import interrupts, plugins
from cachestorm.core.errors import CachestormError

# name -> "module:attribute" of a Typer app (sub-command groups)
SUB_APPS: dict[str, str] = {
    "proxy": "cachestorm.cli.proxy_cmd:app",
    "chaos": "cachestorm.cli.chaos_cmd:app",
    "bench": "cachestorm.cli.bench_cmd:app",
}
# name -> "module:attribute" of a plain function (single commands)
COMMANDS: dict[str, str] = {
    "up": "cachestorm.cli.stack_cmd:up",
    "status": "cachestorm.cli.stack_cmd:status",
    "down": "cachestorm.cli.stack_cmd:down",
    "run": "cachestorm.cli.run_cmd:run",
    "demo": "cachestorm.cli.demo_cmd:demo",
    "report": "cachestorm.cli.report_cmd:report",
    "compare": "cachestorm.cli.report_cmd:compare",
    "matrix": "cachestorm.cli.matrix_cmd:matrix",
    "gate": "cachestorm.cli.gate_cmd:gate",
    "capacity": "cachestorm.cli.capacity_cmd:capacity",
}

app = typer.Typer(
    name="cachestorm",
    help="Load-testing and chaos toolkit for caches.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _load(name: str, spec: str):
    """A listed command that cannot be loaded is a bug, not a command to leave out: one line naming
    its module (exit 1, not a usage error); the cause stays chained for tests and debugging."""
    try:
        return plugins.load(spec, "command")
    except plugins.PluginSettingError:
        raise  # the user's CACHESTORM_PLUGINS is wrong: a usage error, its own one line
    except Exception as exc:
        if interrupts.caused_by_interrupt(exc):  # interrupted while it imported: nothing had started
            raise KeyboardInterrupt from exc
        reason = str(exc).splitlines()[0] if str(exc) else ""
        raise CachestormError(f"command {name!r} cannot be loaded from {spec}: {type(exc).__name__}: {reason} "
                              "(a broken installation or a bug; reinstall cachestorm or report it)",
                              exit_code=1) from exc


def build_app() -> typer.Typer:
    for name, spec in COMMANDS.items():
        app.command(name)(_load(name, spec))
    for name, spec in SUB_APPS.items():
        app.add_typer(_load(name, spec), name=name)
    return app


INTERRUPTED = "interrupted: everything started was stopped and every fault reverted"


def _interrupted() -> None:
    interrupts.ignore_from_now()  # the command is over: a further signal must not change the exit code
    typer.echo("; ".join([INTERRUPTED, *interrupts.notes()]), err=True)
    sys.exit(130)


def main() -> None:
    # SIGTERM (a CI job cancelled, `kill`) and SIGHUP (the terminal closed) clean up exactly as Ctrl-C
    # does: faults reverted, children stopped, the run marked and reported
    interrupts.install()
    try:
        # standalone_mode=False: Typer returns an exit code (Exit(n), Ctrl-C as 130) instead of exiting
        code = build_app()(standalone_mode=False)
        if code == 130 and interrupts.seen():  # Typer's answer to our KeyboardInterrupt: say so
            _interrupted()
        interrupts.ignore_from_now()
    except KeyboardInterrupt:
        _interrupted()
    except CachestormError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except Exception as exc:
        # usage errors (Typer vendors click, so match the shape rather than the class)
        if callable(getattr(exc, "format_message", None)) and isinstance(getattr(exc, "exit_code", None), int):
            typer.echo(f"error: {_one_line_usage_error(exc)}", err=True)
            sys.exit(exc.exit_code)
        raise
    finally:
        interrupts.ignore_from_now()  # (Python restores the default action, death, of handled signals at exit)
    sys.exit(code if isinstance(code, int) else 0)


def _one_line_usage_error(exc) -> str:
    """Click's message (unknown option, bad value, missing argument) plus where help is, on one line."""
    message = " ".join(exc.format_message().split()).rstrip(".")
    context = getattr(exc, "ctx", None)
    command = context.command_path if context is not None else "cachestorm"
    return f"{message}; see `{command} --help`"
