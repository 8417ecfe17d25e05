"""`cachestorm chaos list | apply | status | heal | run`: game days by hand, against `cachestorm up`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from cachestorm.chaos.context import DEFAULT_CHAOS_RUNS, DEFAULT_LEDGER
from cachestorm.core import interrupts
from cachestorm.core.errors import CachestormError
from cachestorm.core.runfolder import RunFolder, make_folder
from cachestorm.core.urls import scrubbed

app = typer.Typer(help="Chaos faults and experiments (game days).", no_args_is_help=True)
console = Console()

LEDGER_HELP = "Ledger of applied faults (what `chaos heal` reverts)."


def _context(ledger: str, allow_remote: bool, run_dir: Path | None, redis_url: str | None,
             postgres_url: str | None, proxy_api_url: str | None):
    from cachestorm.chaos.context import ChaosContext, remote_addresses
    from cachestorm.chaos.ledger import Ledger
    from cachestorm.stack import context_from_stack, load_state

    state = load_state()
    if state is None and not (redis_url or proxy_api_url):
        raise CachestormError("no stack is up in this folder; start one with `cachestorm up` "
                              "(or pass --redis-url / --proxy-api-url)")
    Ledger(ledger).check()  # one we made or recognise, before anything is touched
    if run_dir is not None:
        make_folder(run_dir, flag="--run-dir")
    ctx = context_from_stack(state) if state is not None else ChaosContext()
    for name, value in (("redis_url", redis_url), ("postgres_url", postgres_url),
                        ("proxy_api_url", proxy_api_url)):
        if value:
            setattr(ctx, name, value)
    ctx.ledger_path = ledger
    ctx.run_dir = str(run_dir) if run_dir else None
    remote = remote_addresses(ctx)
    if remote and not allow_remote:
        if not typer.confirm(f"This touches non-loopback addresses: {', '.join(remote)}. Continue?"):
            raise typer.Abort()
        allow_remote = True
    ctx.allow_remote = allow_remote
    return ctx


def _run_live(runner, title: str, stop_on_error: bool = False) -> None:
    """Show what is active and how long it has left until the timeline ends; always roll back.
    `stop_on_error`: end as soon as nothing is active after an error (a fault that failed to apply
    has nothing to wait for)."""
    def render() -> Table:
        table = Table(title=f"{title}  t={runner.elapsed():.1f}s  (Ctrl-C reverts everything)")
        for column in ("fault", "settings", "started", "left", "reverted by, if this process dies"):
            table.add_column(column)
        for fault in runner.active_faults():
            left = "until the end" if fault["for"] is None else \
                f"{max(0.0, fault['at'] + fault['for'] - runner.elapsed()):.1f}s"
            table.add_row(fault["fault"], json.dumps(fault["settings"]), f"{fault['at']:g}s", left,
                          fault["self_expiry"] or "-")
        return table

    from cachestorm.chaos.self_expiry import unguarded_warning

    warning = unguarded_warning(runner.context.proxy_api_url, [step.build() for step in runner.experiment.method])
    if warning:
        console.print(f"[yellow]{warning}[/]")
    interrupts.install()  # a `kill` (SIGTERM) rolls back like Ctrl-C does, also when called outside main()
    runner.start()
    try:
        with Live(render(), console=console, refresh_per_second=4, transient=False) as live:
            while not runner.wait(timeout=0.25):
                live.update(render())
                if stop_on_error and runner.summary()["errors"] and not runner.active_faults():
                    break
            live.update(render())
    except KeyboardInterrupt:
        runner.stop()
        _print_outcome(runner.summary(), runner.journal.path.parent)
        # an error, not typer.Exit: the CLI shell drops typer.Exit's code (standalone_mode=False)
        raise CachestormError("interrupted: every fault was reverted", exit_code=130) from None
    finally:
        runner.stop()


def _journal(run_dir: Path | None, label: str):
    folder = RunFolder(run_dir) if run_dir else RunFolder.new(DEFAULT_CHAOS_RUNS, label)
    return folder.journal(), folder.path


@app.command("list")
def list_cmd() -> None:
    """Faults (with their settings) and ready experiments."""
    from cachestorm.chaos.experiment import load_experiment, ready_experiments
    from cachestorm.chaos.faults import FAULTS, fault_class

    table = Table(title="faults")
    for column in ("fault", "what it does", "settings (defaults)"):
        table.add_column(column)
    for name in FAULTS:
        cls = fault_class(name)
        defaults = ", ".join(f"{k}={v}" for k, v in cls.from_settings({}).settings().items())
        table.add_row(name, cls.summary, defaults)
    console.print(table)
    table = Table(title="ready experiments (chaos run NAME)")
    for column in ("experiment", "timeline", "on deviation"):
        table.add_column(column)
    for name in ready_experiments():
        exp = load_experiment(name)
        timeline = "; ".join(f"{s.fault} @{s.at_s:g}s" + (f" for {s.for_s:g}s" if s.for_s else "")
                             for s in exp.method)
        table.add_row(name, timeline, exp.deviation)
    console.print(table)


@app.command("apply")
def apply_cmd(
    fault: str = typer.Argument(..., help="Fault name (see `chaos list`)."),
    set_: list[str] = typer.Option([], "--set", help="A setting as key=value (repeatable)."),
    for_: str = typer.Option("30s", "--for", help="How long the fault lasts: 30s, 2m."),
    ledger: str = typer.Option(str(DEFAULT_LEDGER), "--ledger", help=LEDGER_HELP),
    run_dir: Path = typer.Option(None, "--run-dir", help="Journal folder (default .cachestorm/chaos/...)."),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Do not ask before touching remote hosts."),
    redis_url: str = typer.Option(None, "--redis-url", help="Redis (direct, admin) instead of the stack's."),
    postgres_url: str = typer.Option(None, "--postgres-url"),
    proxy_api_url: str = typer.Option(None, "--proxy-api-url"),
) -> None:
    """Apply one fault for a while, with a live view; reverts at the end or on Ctrl-C."""
    from cachestorm.chaos.experiment import Experiment
    from cachestorm.chaos.runner import ExperimentRunner
    from cachestorm.core.durations import parse_duration

    settings = {}
    for item in set_:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CachestormError(f"--set {item!r}: expected key=value, e.g. --set latency_ms=200")
        settings[key.strip()] = value.strip()
    window = parse_duration(for_, "--for")
    experiment = Experiment.single(fault, settings, window)
    ctx = _context(ledger, allow_remote, run_dir, redis_url, postgres_url, proxy_api_url)
    journal, folder = _journal(run_dir, f"apply-{fault}")
    runner = ExperimentRunner(experiment, ctx, journal)
    _run_live(runner, f"{fault} for {window:g}s", stop_on_error=True)
    summary = runner.summary()
    _print_outcome(summary, folder)
    if summary["errors"]:
        raise CachestormError(f"{fault} failed: {summary['errors'][0]}", exit_code=1)


@app.command("run")
def run_cmd(
    experiment: str = typer.Argument(..., help="A ready experiment name or a YAML file."),
    at: str = typer.Option(None, "--at", help="Move the timeline so the first fault starts at this second."),
    ledger: str = typer.Option(str(DEFAULT_LEDGER), "--ledger", help=LEDGER_HELP),
    run_dir: Path = typer.Option(None, "--run-dir", help="Run folder to read live numbers from and journal to."),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Do not ask before touching remote hosts."),
) -> None:
    """Run an experiment's timeline and probes against the stack from `cachestorm up`."""
    from cachestorm.chaos.experiment import load_experiment
    from cachestorm.chaos.runner import ExperimentRunner
    from cachestorm.core.durations import parse_duration

    exp = load_experiment(experiment)
    if at is not None:
        exp = exp.shifted(parse_duration(at, "--at"))
    ctx = _context(ledger, allow_remote, run_dir, None, None, None)
    journal, folder = _journal(run_dir, f"chaos-{exp.name}")
    runner = ExperimentRunner(exp, ctx, journal)
    _run_live(runner, f"experiment {exp.name}")
    summary = runner.summary()
    _print_outcome(summary, folder)
    if summary["hypothesis"] == "deviated":
        raise CachestormError(f"the steady-state hypothesis of {exp.name} deviated "
                              f"({len(summary['deviations'])} checks; see the journal)", exit_code=1)
    failed = runner.failed_faults()
    if failed:  # refused by the proxy, reverted badly, never applied, or touched nothing
        first = failed[0]
        raise CachestormError(f"{len(failed)} fault(s) of {exp.name} failed: {first['what']}: "
                              f"{first['details'].get('error') or first['outcome']}", exit_code=1)
    if summary["hypothesis"] == "not_verified":
        raise CachestormError(f"the steady-state hypothesis of {exp.name} was not verified: no data for probe "
                              f"{', '.join(summary['unknown_probes'])}", exit_code=1)


def _print_outcome(summary: dict, folder: Path) -> None:
    if not console.is_terminal:
        console.print()  # the live view leaves no line break behind when not on a terminal
    for record in summary["faults"]:
        console.print(f"{record['outcome']:>8}  {record['what']}  t={record['t_start']:.1f}s..{record['t_end']:.1f}s "
                      f"({record['details'].get('ended_by')})")
    deviations = summary["deviations"]
    console.print(f"hypothesis: {summary['hypothesis']}" + (f" ({len(deviations)} deviating checks)" if deviations
                                                             else "") + ("; ABORTED" if summary["aborted"] else ""))
    for error in summary["errors"]:
        console.print(f"[red]error:[/] {error}")
    console.print(f"journal: {RunFolder(folder).journal_path}")


@app.command("status")
def status_cmd(ledger: str = typer.Option(str(DEFAULT_LEDGER), "--ledger", help=LEDGER_HELP),
               as_json: bool = typer.Option(False, "--json")) -> None:
    """Active faults from the ledger, who reverts each if its controller dies, and the proxy's toxics."""
    from cachestorm.chaos.faults.process_signals import start_time
    from cachestorm.chaos.ledger import Ledger
    from cachestorm.chaos.self_expiry import listings, what_it_does, who_reverts
    from cachestorm.chaos.toxiproxy import ToxiproxyClient

    active = Ledger(ledger).active()
    proxies = _proxy_urls(active)
    toxics = []
    for url in proxies:
        try:
            with ToxiproxyClient(url) as client:
                for name, proxy in client.proxies().items():
                    toxics += [{"api": url, "proxy": name, "enabled": proxy.get("enabled"), **t}
                               for t in proxy.get("toxics") or []]
                    if not proxy.get("enabled", True):
                        toxics.append({"api": url, "proxy": name, "enabled": False, "name": "(proxy disabled)"})
        except CachestormError as exc:
            toxics.append({"api": url, "error": str(exc)})
    expiries = listings(proxies)
    for entry in active:
        entry["if_controller_dies"] = who_reverts(entry, expiries)
    if as_json:
        shown = {"active_faults": active, "toxics": toxics, "expiries": expiries}
        typer.echo(json.dumps(scrubbed(json.loads(json.dumps(shown, default=str)))))  # entries hold URLs, passwords
        return
    table = Table(title=f"active faults ({ledger})")
    for column in ("id", "fault", "settings", "applied", "window", "controller", "reverted by, if it dies"):
        table.add_column(column)
    for entry in active:
        alive = start_time(entry["pid"]) is not None
        table.add_row(entry["id"], entry["fault"], json.dumps(entry["settings"]),
                      time.strftime("%H:%M:%S", time.localtime(entry["at"])),
                      "until stopped" if entry.get("window_s") is None else f"{entry['window_s']:g}s",
                      f"pid {entry['pid']} " + ("running" if alive else "[red]gone[/] (run `chaos heal`)"),
                      entry["if_controller_dies"])
    console.print(table)
    table = Table(title="reverts the proxies will run by themselves")
    for column in ("proxy api", "id", "what", "when"):
        table.add_column(column)
    for url, listing in expiries.items():
        if isinstance(listing, str):
            table.add_row(url, "-", f"[red]none can self-expire[/]: {listing}", "-")
            continue
        for pending in listing["pending"]:
            when = (time.strftime("%H:%M:%S", time.localtime(pending["due_at"])) if pending.get("due_at")
                    else f"when pid {pending['owner']['pid']} exits")
            table.add_row(url, pending["id"], f"{pending['label']}: {what_it_does(pending['actions'])}", when)
    console.print(table)
    table = Table(title="proxy toxics")
    for column in ("proxy", "toxic", "type", "stream", "attributes"):
        table.add_column(column)
    for toxic in toxics:
        table.add_row(toxic.get("proxy", ""), toxic.get("name", toxic.get("error", "")), toxic.get("type", ""),
                      toxic.get("stream", ""), json.dumps(toxic.get("attributes", {})))
    console.print(table)


@app.command("heal")
def heal_cmd(ledger: str = typer.Option(str(DEFAULT_LEDGER), "--ledger", help=LEDGER_HELP)) -> None:
    """Revert every fault in the ledger and remove cachestorm's leftover toxics on the proxy."""
    from cachestorm.chaos.ledger import Ledger, heal

    results = heal(ledger, tuple(_proxy_urls(Ledger(ledger).active())))
    if not results:
        console.print("nothing to heal: no active faults, no leftover toxics")
    for result in results:
        console.print(f"{result['outcome']:>9}  {result['fault']}  {result['id']}  {json.dumps(result['details'])}")
    if any(r["outcome"] == "failed" for r in results):
        raise CachestormError("some faults could not be reverted (see above); fix the cause and run "
                              "`cachestorm chaos heal` again", exit_code=1)


def _proxy_urls(active: list[dict]) -> list[str]:
    from cachestorm.stack import load_state

    urls = {e.get("context", {}).get("proxy_api_url") for e in active} - {None, ""}
    state = load_state()
    if state is not None:
        urls.add(state.proxy_api_url)
    return sorted(urls)
