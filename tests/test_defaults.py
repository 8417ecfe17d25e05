"""One table of defaults (cachestorm.core.defaults): the CLI of run, matrix, capacity and demo, the
run's, the targets' and the traffic's settings all take theirs from it; a command differs only by a
named entry; each part renders and validates its own settings."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import typer.main

from cachestorm.core.defaults import DEFAULTS, Defaults
from cachestorm.core.durations import parse_duration
from cachestorm.core.errors import CachestormError

COMMANDS = ("run", "matrix", "capacity", "demo")
# defaults that are what the command is, not a setting (the demo's four strategies)
NOT_SETTINGS = {("demo", "strategies")}
TABLE = {f.name for f in dataclasses.fields(Defaults)}


def cli_defaults() -> dict[str, dict[str, object]]:
    from cachestorm.cli.main import build_app

    cli = typer.main.get_command(build_app())
    return {name: {p.name: p.default for p in cli.commands[name].params} for name in COMMANDS}


def table_entry(command: str, parameter: str) -> str | None:
    """The table's entry for a flag: the command's own (matrix_users) first, then the shared one;
    a duration flag's entry carries its unit (--duration -> duration_s, --recompute -> recompute_ms)."""
    for prefix in (f"{command}_", ""):
        for unit in ("", "_s", "_ms"):
            if prefix + parameter + unit in TABLE:
                return prefix + parameter + unit
    return None


def as_table_value(entry: str, cli_default):
    if isinstance(cli_default, str) and entry.endswith(("_s", "_ms")):
        return parse_duration(cli_default) * (1000 if entry.endswith("_ms") else 1)
    return cli_default


def test_the_cli_defaults_of_run_matrix_capacity_and_demo_come_from_the_table():
    checked = set()
    for command, parameters in cli_defaults().items():
        for parameter, default in parameters.items():
            if default is None or default is False or (command, parameter) in NOT_SETTINGS:
                continue  # None: "not set" (the target's own, the domain's); False: a switch left off
            entry = table_entry(command, parameter)
            assert entry is not None, f"{command} --{parameter}: default {default!r} is not in core.defaults"
            assert as_table_value(entry, default) == getattr(DEFAULTS, entry), (command, parameter, entry)
            checked.add((command, parameter))
    # not vacuous: the ones the issue named, on every command
    assert {("run", "users"), ("run", "recompute"), ("run", "celebrity_share"), ("matrix", "users"),
            ("matrix", "recompute"), ("matrix", "celebrity_share"), ("capacity", "ttl"), ("capacity", "keys"),
            ("demo", "duration"), ("run", "db_capacity"), ("matrix", "db_capacity")} <= checked


def test_run_and_matrix_differ_only_by_named_entries():
    """users, recompute, celebrity share (and anything else both take): equal, or a matrix_ entry."""
    defaults = cli_defaults()
    for other in ("matrix", "capacity"):
        for parameter in defaults["run"].keys() & defaults[other].keys():
            run_value, other_value = defaults["run"][parameter], defaults[other][parameter]
            if run_value != other_value and other_value is not None:  # None: required there (capacity -s)
                assert (table_entry(other, parameter) or "").startswith(f"{other}_"), (
                    f"{other} --{parameter} defaults to {other_value!r}, run to {run_value!r}, "
                    f"without a {other}_ entry in core.defaults")
    assert (DEFAULTS.users, DEFAULTS.recompute_ms, DEFAULTS.celebrity_share) == (50, 50.0, 0.0)
    assert (DEFAULTS.matrix_users, DEFAULTS.matrix_recompute_ms, DEFAULTS.matrix_celebrity_share) == (40, 100.0, 0.2)


# a table with every entry the CLI shows changed, installed before anything reads it
CHANGED = {"users": 7, "matrix_users": 9, "recompute_ms": 75.0, "matrix_recompute_ms": 125.0, "keys": 123,
           "db_capacity": 6, "capacity_ttl_s": 60.0, "demo_duration_s": 12.0, "pool_size": 3, "alpha": 1.7,
           "target_db_capacity": 2, "capacity_steps": 4}
PROBE = """
import dataclasses, json, sys
import cachestorm.core.defaults as table
table.DEFAULTS = dataclasses.replace(table.DEFAULTS, **json.loads(sys.argv[1]))
import typer.main
from cachestorm.cli.main import build_app
from cachestorm.capacity import CapacityPlan
from cachestorm.conductor import RunSettings
from cachestorm.targets.settings import TargetSettings
from cachestorm.traffic.settings import ARGUMENTS, check_options
cli = typer.main.get_command(build_app())
out = {name: {p.name: p.default for p in cli.commands[name].params} for name in ("run", "matrix", "capacity", "demo")}
out["RunSettings"] = dataclasses.asdict(RunSettings(), dict_factory=lambda pairs: {k: v for k, v in pairs if k != "stack"})
out["TargetSettings"] = dataclasses.asdict(TargetSettings())
out["ARGUMENTS"] = {flag: default for flag, _, default, _ in ARGUMENTS}
out["alpha"] = check_options({}, "profiles").description["alpha"]
out["CapacityPlan"] = CapacityPlan(strategies=["x"]).steps
print(json.dumps(out, default=str))
"""


def test_changing_a_table_entry_changes_every_default_that_reads_it():
    result = subprocess.run([sys.executable, "-c", PROBE, json.dumps(CHANGED)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    seen = json.loads(result.stdout)
    assert (seen["run"]["users"], seen["matrix"]["users"]) == (7, 9)
    assert (seen["run"]["recompute"], seen["capacity"]["recompute"], seen["matrix"]["recompute"]) == (
        "75ms", "75ms", "125ms")
    assert (seen["run"]["keys"], seen["capacity"]["keys"]) == (123, 123)
    assert {seen[c]["db_capacity"] for c in ("run", "matrix", "capacity")} == {6}
    assert (seen["capacity"]["ttl"], seen["demo"]["duration"], seen["capacity"]["steps"]) == ("60s", "12s", 4)
    assert (seen["RunSettings"]["users"], seen["RunSettings"]["keys"], seen["RunSettings"]["pool_size"]) == (7, 123, 3)
    assert (seen["TargetSettings"]["pool_size"], seen["TargetSettings"]["db_capacity"]) == (3, 2)
    assert (seen["ARGUMENTS"]["--keys"], seen["alpha"], seen["CapacityPlan"]) == (123, 1.7, 4)


def test_the_parts_settings_take_their_defaults_from_the_table():
    from cachestorm.chaos.context import ChaosContext
    from cachestorm.targets.settings import TargetSettings
    from cachestorm.traffic.settings import ARGUMENTS, check_options, option_name

    from cachestorm.capacity import CapacityPlan
    from cachestorm.conductor import RunSettings

    run = RunSettings()
    for f in dataclasses.fields(RunSettings):
        if f.name in TABLE and getattr(run, f.name) is not None:
            assert getattr(run, f.name) == getattr(DEFAULTS, f.name), f.name
    target, own = TargetSettings(), {"port": "target_port", "db_capacity": "target_db_capacity",
                                     "max_stale": "max_stale_s", "negative_ttl": "negative_ttl_s",
                                     "pool_timeout": "pool_timeout_s", "flush_interval": "flush_interval_s"}
    for f in dataclasses.fields(TargetSettings):
        entry = own.get(f.name, f.name)
        if entry in TABLE:
            assert getattr(target, f.name) == getattr(DEFAULTS, entry), f.name
    traffic_own = {"seed": "locust_seed", "request_timeout": "locust_request_timeout_s"}
    for flag, _, default, _ in ARGUMENTS:
        entry = traffic_own.get(option_name(flag), option_name(flag))
        if entry in TABLE and default is not None:
            assert default == getattr(DEFAULTS, entry), flag
    described = check_options({}, "profiles").description
    assert (described["alpha"], described["key_model"]) == (DEFAULTS.alpha, DEFAULTS.key_model)
    chaos = ChaosContext()
    assert (chaos.domain, chaos.hot_keys, chaos.key_space) == (DEFAULTS.domain, DEFAULTS.hot_keys, DEFAULTS.keys)
    plan = CapacityPlan(strategies=["cache-aside"])
    assert (plan.max_rate, plan.steps, plan.hold_s, plan.slo_p99_ms, plan.max_error_rate) == (
        DEFAULTS.capacity_max_rate, DEFAULTS.capacity_steps, DEFAULTS.capacity_hold_s,
        DEFAULTS.capacity_slo_p99_ms, DEFAULTS.capacity_max_error_rate)


# ---------------------------------------------------------------- each part renders its own command line

def test_a_target_renders_the_command_line_its_own_parser_reads_back():
    from cachestorm.targets.settings import TargetSettings, parse_settings

    every_field_changed = TargetSettings(
        domain="catalog", strategy="cache-aside+lock", port=8123, rows=77, ttl=9.5, recompute_ms=12.0,
        db_capacity=3, recompute_mode="cpu", pool_size=4, pool_timeout=0.5, hot_keys=3, instance_id="t9",
        redis_timeout_ms=100.0, breaker_failures=2, breaker_cooldown_s=0.5, lock_ms=900.0, max_stale=4.0,
        negative_ttl=2.0, jitter=0.2, xfetch_beta=2.0, stale_if_error_s=60.0, flush_interval=0.5, revoke_bound=3.0)
    argv = every_field_changed.argv()
    assert parse_settings(argv) == every_field_changed
    assert parse_settings(TargetSettings(port=8001).argv()) == TargetSettings(port=8001)


def test_a_targets_command_line_never_carries_the_urls():
    from cachestorm.targets.settings import TargetSettings

    argv = TargetSettings(redis_url="redis://:s3cret@127.0.0.1:6390/0",
                          postgres_url="postgresql://u:s3cret@127.0.0.1:5440/x").argv()
    assert not any("s3cret" in part or "url" in part for part in argv), argv


def test_the_traffic_validates_options_by_name_without_a_command_line():
    from cachestorm.traffic.settings import build_settings, check_options, option_name, traffic_argv

    options = {"keys": 300, "alpha": 1.2, "missing_share": 0.1, "retry": "naive:2", "seed": 5, "rate": 40.0}
    argv = traffic_argv(options)
    assert argv[argv.index("--keys") + 1] == "300" and argv[argv.index("--retry") + 1] == "naive:2"
    parsed = SimpleNamespace(**{option_name(flag): value for flag, value in zip(argv[::2], argv[1::2], strict=True)})
    assert build_settings(parsed, "profiles").description == check_options(options, "profiles").description
    with pytest.raises(CachestormError, match="--missing-share"):
        check_options({"missing_share": 2.0}, "profiles")
    with pytest.raises(CachestormError, match="unknown traffic option 'missing_shares'"):
        check_options({"missing_shares": 0.1}, "profiles")  # a misspelt name must not pass unchecked
    with pytest.raises(CachestormError, match="unknown traffic option"):
        traffic_argv({"kyes": 3})


def test_a_run_refuses_bad_traffic_and_target_settings_in_one_line():
    from cachestorm.conductor import RunSettings

    with pytest.raises(CachestormError, match="--request-timeout"):
        RunSettings(request_timeout_s=0).validate()
    with pytest.raises(CachestormError, match="--pool-size"):
        RunSettings(pool_size=0).validate()
    with pytest.raises(CachestormError, match="--jitter"):
        RunSettings(jitter=-1.0).validate()
    RunSettings().validate()


def test_the_knob_flags_are_declared_once_and_reach_every_command():
    from cachestorm.cli import options

    defaults = cli_defaults()
    for command in ("run", "matrix", "capacity"):
        assert set(options.KNOBS) <= set(defaults[command]), command


def test_the_limits_are_the_tables_and_hold_at_their_edges():
    """A value at a limit is accepted, just past it refused (core.defaults.LIMITS; docs/design.md, "Limits")."""
    from cachestorm.conductor import RunSettings
    from cachestorm.core.defaults import LIMITS

    edges = {"users": (LIMITS.max_users, 1), "spawn_rate": (LIMITS.max_spawn_rate, 1.0),
             "rate": (LIMITS.max_rate, 1.0), "duration_s": (LIMITS.max_duration_s, 1.0),
             "recompute_ms": (LIMITS.max_recompute_ms, 1.0), "ttl_s": (LIMITS.max_ttl_s, 1.0),
             "pool_timeout_s": (LIMITS.max_pool_timeout_s, 1.0), "pool_size": (LIMITS.max_db_connections, 1),
             "db_capacity": (LIMITS.max_db_capacity, 1), "rows": (LIMITS.max_rows, 1)}
    for name, (limit, step) in edges.items():
        RunSettings(**{name: limit}).validate()
        with pytest.raises(CachestormError, match="at most|between|more than"):
            RunSettings(**{name: limit + step}).validate()
    RunSettings(label="a" * LIMITS.max_label_chars, explicit=frozenset({"label"})).validate()
    with pytest.raises(CachestormError, match="--label is at most"):
        RunSettings(label="a" * (LIMITS.max_label_chars + 1), explicit=frozenset({"label"})).validate()
