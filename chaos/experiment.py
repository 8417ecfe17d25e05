"""Chaos experiments: YAML files with a steady-state hypothesis, a timeline of faults and what to
do on deviation. Validated on load, with `file:line: field: problem` errors, before anything runs.

    name: hot-key-expiry
    description: ...
    steady_state:            # the hypothesis: probes on live numbers (see chaos/probes.py)
      interval: 1s           # how often probes are checked while faults are active
      settle: 5s             # "after" is checked this long after the last fault ends
      probes:
        - {name: p99 bounded, metric: p99_ms, max: 500, window: 5s, phases: [before, during, after]}
    method:                  # the timeline; several faults may overlap
      - {fault: hot-key-expiry, at: 10s, settings: {count: 10}}
      - {fault: redis-latency, at: 20s, for: 30s, settings: {latency_ms: 100}}
    deviation: continue      # or abort: roll back every fault and signal the conductor to stop
    run:                     # optional: what this experiment is about, used by `cachestorm run`
      domain: counters       #   where the user left the flag at its default
      strategy: write-behind
      retry: naive:3
      duration: 60s
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from cachestorm.chaos.faults import FAULTS, fault_class
from cachestorm.chaos.faults.base import SettingError
from cachestorm.chaos.probes import METRICS

from cachestorm.core.defaults import LIMITS
from cachestorm.core.durations import DurationError, parse_duration
from cachestorm.core.errors import CachestormError
from cachestorm.core.yamlload import safe_load_unique

PHASES = ("before", "during", "after")
# what an experiment's `run:` may recommend ("duration": a duration string such as 30s or 500ms)
RUN_FIELDS = {"domain": str, "strategy": str, "retry": str, "duration": "duration", "users": int, "rate": float,
              "keys": int, "key_model": str, "alpha": float, "celebrity_share": float, "write_ratio": float, "ttl": "duration",
              "recompute": "duration", "recompute_mode": str, "db_capacity": int, "pool_size": int,
              "pool_timeout": "duration", "request_timeout": "duration", "missing_share": float}
DEVIATIONS = ("continue", "abort")


class ExperimentError(CachestormError):
    """A malformed experiment file; the message lists every problem as file:line: field: what."""


@dataclass
class Probe:
    name: str
    metric: str
    min: float | None = None
    max: float | None = None
    window_s: float = 5.0
    phases: tuple[str, ...] = PHASES

    def verdict(self, value: float | None) -> str:
        if value is None:
            return "unknown"  # no samples in the window: not a pass (the hypothesis is then not verified)
        if self.min is not None and value < self.min:
            return "deviated"
        if self.max is not None and value > self.max:
            return "deviated"
        return "ok"

    def tolerance(self) -> str:
        parts = []
        if self.min is not None:
            parts.append(f">= {self.min:g}")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        return " and ".join(parts)


@dataclass
class Step:
    fault: str
    at_s: float
    for_s: float | None          # None: until the run ends
    settings: dict[str, Any] = field(default_factory=dict)
    line: int = 0

    def build(self):
        """A fresh fault object for this step (settings were validated on load)."""
        return fault_class(self.fault).from_settings(self.settings)

    @property
    def end_s(self) -> float | None:
        return None if self.for_s is None else self.at_s + self.for_s


@dataclass
class Experiment:
    name: str
    description: str = ""
    probes: list[Probe] = field(default_factory=list)
    method: list[Step] = field(default_factory=list)
    deviation: str = "continue"
    interval_s: float = 1.0
    settle_s: float = 5.0
    path: str = ""
    run: dict[str, Any] = field(default_factory=dict)   # recommended run settings (RUN_FIELDS)

    def shifted(self, first_at_s: float) -> Experiment:
        """The same experiment with its timeline moved so the first fault starts at `first_at_s`."""
        if not 0 <= first_at_s <= LIMITS.max_duration_s:
            raise CachestormError(f"the first fault may start at most {LIMITS.max_duration_s / 3600:g}h in "
                                  f"(got {first_at_s:g}s)")
        offset = first_at_s - min((s.at_s for s in self.method), default=0.0)
        steps = [replace(s, at_s=max(0.0, s.at_s + offset)) for s in self.method]
        return replace(self, method=steps)

    @classmethod
    def single(cls, fault: str, settings: dict, for_s: float | None, at_s: float = 0.0) -> Experiment:
        """A one-fault timeline (what `chaos apply` runs); settings are checked here."""
        fault_class(fault).from_settings(settings)
        if for_s is not None and not 0 < for_s <= LIMITS.max_duration_s:
            raise CachestormError(f"--for must be more than 0s and at most {LIMITS.max_duration_s / 3600:g}h "
                                  f"(got {for_s:g}s)")
        return cls(name=f"apply {fault}", method=[Step(fault, at_s, for_s, dict(settings))], settle_s=0.0)

    def duration_s(self) -> float:
        """When the last timed fault ends (one-shot faults, and faults without `for`, at their `at`)."""
        ends = [s.at_s if s.end_s is None or fault_class(s.fault).one_shot else s.end_s for s in self.method]
        return max(ends, default=0.0)


# ---------------------------------------------------------------- loading

def ready_experiments() -> list[str]:
    folder = resources.files(__package__) / "experiments"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_experiment(name_or_path: str | Path) -> Experiment:
    """A ready experiment by name (`hot-key-expiry`) or a YAML file by path."""
    path = Path(name_or_path)
    try:
        is_file = path.is_file()
    except OSError as exc:  # e.g. a name longer than the file system takes
        raise ExperimentError(f"experiment file {str(path)[:60]}: cannot use it ({exc.strerror})") from None
    if path.is_dir():
        raise ExperimentError(f"experiment file {path}: is a folder; give a YAML file")
    if is_file:
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise ExperimentError(f"{path}: not a text file; an experiment is a UTF-8 YAML file") from None
        except OSError as exc:
            raise ExperimentError(f"{path}: cannot read it ({exc.strerror})") from None
        return parse_experiment(text, str(path))
    name = str(name_or_path)
    if name in ready_experiments():
        resource = resources.files(__package__) / "experiments" / f"{name}.yaml"
        return parse_experiment(resource.read_text(), str(resource))
    if name.endswith((".yaml", ".yml")) or "/" in name:
        raise CachestormError(f"experiment file {name} does not exist")
    raise CachestormError(f"unknown experiment {name!r}; ready experiments: {', '.join(ready_experiments())} "
                          "(or give a path to a YAML file)")


def _run_section(check: _Checker, section: Any) -> dict[str, Any]:
    if not isinstance(section, dict):
        check.problem(("run",), f"must be a mapping of {', '.join(RUN_FIELDS)}")
        return {}
    result: dict[str, Any] = {}
    for key, value in section.items():
        kind = RUN_FIELDS.get(key)
        if kind is None:
            check.problem(("run", key), f"unknown field (known: {', '.join(RUN_FIELDS)})")
        elif kind == "duration":
            if check.duration(("run", key), value) is not None:
                result[key] = str(value)
        elif not isinstance(value, kind) and not (kind is float and isinstance(value, int)) or isinstance(value, bool):
            check.problem(("run", key), f"must be a {kind.__name__}, got {value!r}")
        else:
            result[key] = value
    return result


class _Checker:
    """Collects problems with the line of the YAML node they are about."""

    def __init__(self, source: str, root: yaml.Node | None):
        self.source = source
        self.root = root
        self.problems: list[str] = []

    def node(self, *path: str | int) -> yaml.Node | None:
        node = self.root
        for part in path:
            if isinstance(node, yaml.MappingNode):
                node = next((v for k, v in node.value if k.value == part), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
            else:
                return node
            if node is None:
                return None
        return node

    def line(self, *path: str | int) -> int:
        for depth in range(len(path), -1, -1):
            node = self.node(*path[:depth])
            if node is not None:
                return node.start_mark.line + 1
        return 1

    def problem(self, path: tuple, message: str) -> None:
        field_name = ".".join(str(p) for p in path) or "(file)"
        self.problems.append(f"{self.source}:{self.line(*path)}: {field_name}: {message}")

    def duration(self, path: tuple, value: Any) -> float | None:
        try:
            return parse_duration(value, "duration")
        except DurationError as exc:
            self.problem(path, str(exc).removeprefix("duration: "))
            return None


def parse_experiment(text: str, source: str = "<string>") -> Experiment:
    try:
        root = yaml.compose(text)
        data = safe_load_unique(text)  # a key written twice is an error, with its line
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        raise ExperimentError(f"{source}:{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    check = _Checker(source, root)
    if not isinstance(data, dict):
        check.problem((), "an experiment is a mapping with name, steady_state, method, deviation")
        raise ExperimentError("; ".join(check.problems))
    for key in data:
        if key not in ("name", "description", "steady_state", "method", "deviation", "run"):
            check.problem((key,), "unknown field (known: name, description, steady_state, method, deviation, run)")
    run = _run_section(check, data.get("run") or {})
    name = data.get("name")
    if not isinstance(name, str) or not name:
        check.problem(("name",), "required: a non-empty string")
    deviation = data.get("deviation", "continue")
    if deviation not in DEVIATIONS:
        check.problem(("deviation",), f"must be one of {', '.join(DEVIATIONS)}, got {deviation!r}")
    interval, settle, probes = _steady_state(check, data.get("steady_state") or {})
    method = _method(check, data.get("method"))
    if check.problems:
        raise ExperimentError(f"{len(check.problems)} problem(s): " + "; ".join(check.problems))
    return Experiment(name=name, description=str(data.get("description") or ""), probes=probes, run=run,
                      method=method, deviation=deviation, interval_s=interval or 1.0,
                      settle_s=5.0 if settle is None else settle, path=source)


def _steady_state(check: _Checker, block: Any) -> tuple[float | None, float | None, list[Probe]]:
    if not isinstance(block, dict):
        check.problem(("steady_state",), "must be a mapping with probes (and optionally interval, settle)")
        return None, None, []
    for key in block:
        if key not in ("probes", "interval", "settle"):
            check.problem(("steady_state", key), "unknown field (known: probes, interval, settle)")
    interval = check.duration(("steady_state", "interval"), block.get("interval", 1))
    if interval is not None and interval <= 0:
        check.problem(("steady_state", "interval"), "must be more than 0")
    settle = check.duration(("steady_state", "settle"), block.get("settle", 5))
    raw = block.get("probes") or []
    if not isinstance(raw, list):
        check.problem(("steady_state", "probes"), "must be a list of probes")
        return interval, settle, []
    probes = []
    for index, item in enumerate(raw):
        path = ("steady_state", "probes", index)
        if not isinstance(item, dict):
            check.problem(path, "a probe is a mapping: {name, metric, min/max, window, phases}")
            continue
        for key in item:
            if key not in ("name", "metric", "min", "max", "window", "phases"):
                check.problem((*path, key), "unknown field (known: name, metric, min, max, window, phases)")
        metric = item.get("metric")
        if metric not in METRICS:
            check.problem((*path, "metric"), f"must be one of {', '.join(METRICS)}, got {metric!r}")
        bounds = {}
        for bound in ("min", "max"):
            value = item.get(bound)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                      or not math.isfinite(value)):
                check.problem((*path, bound), f"must be a finite number, got {value!r}")
                value = None
            bounds[bound] = None if value is None else float(value)
        if bounds["min"] is None and bounds["max"] is None:
            check.problem(path, "a probe needs a tolerance: min, max or both")
        elif bounds["min"] is not None and bounds["max"] is not None and bounds["min"] > bounds["max"]:
            check.problem((*path, "min"), f"min {bounds['min']:g} is above max {bounds['max']:g}; no value could pass")
        window = check.duration((*path, "window"), item.get("window", 5))
        if window is not None and window <= 0:
            check.problem((*path, "window"), "must be more than 0 (the probe averages over it), e.g. 5s")
        phases = item.get("phases", list(PHASES))
        if isinstance(phases, str):
            phases = [phases]
        if not isinstance(phases, list) or not phases or any(p not in PHASES for p in phases):
            check.problem((*path, "phases"), f"must be a list of {', '.join(PHASES)}, got {phases!r}")
            phases = list(PHASES)
        probes.append(Probe(name=str(item.get("name") or f"{metric} #{index + 1}"), metric=str(metric),
                            min=bounds["min"], max=bounds["max"], window_s=window or 5.0,
                            phases=tuple(phases)))
    return interval, settle, probes


def _method(check: _Checker, raw: Any) -> list[Step]:
    if not isinstance(raw, list) or not raw:
        check.problem(("method",), "required: a list of faults, each {fault, at, for, settings}")
        return []
    steps = []
    for index, item in enumerate(raw):
        path = ("method", index)
        if not isinstance(item, dict):
            check.problem(path, "a step is a mapping: {fault, at, for, settings}")
            continue
        for key in item:
            if key not in ("fault", "at", "for", "settings"):
                check.problem((*path, key), "unknown field (known: fault, at, for, settings)")
        fault = item.get("fault")
        if fault not in FAULTS:
            check.problem((*path, "fault"), f"unknown fault {fault!r}; known: {', '.join(sorted(FAULTS))}")
            continue
        if "at" not in item:
            check.problem(path, "required: at (when the fault starts, e.g. 10s)")
        at = check.duration((*path, "at"), item.get("at", 0))
        for_s = None if item.get("for") is None else check.duration((*path, "for"), item["for"])
        if for_s is not None and for_s <= 0:
            check.problem((*path, "for"), "must be more than 0 (leave it out: until the run ends)")
        if item.get("for") is not None and fault_class(fault).one_shot:
            check.problem((*path, "for"), f"{fault} is one-shot (instant, nothing to undo): it takes no `for`")
        settings = item.get("settings") or {}
        if not isinstance(settings, dict):
            check.problem((*path, "settings"), "must be a mapping of setting: value")
            continue
        try:
            fault_class(fault).from_settings(settings)
        except SettingError as exc:
            sub = ("settings", exc.field) if exc.field else ("settings",)
            check.problem((*path, *sub), str(exc))
            continue
        steps.append(Step(fault=fault, at_s=at or 0.0, for_s=for_s, settings=dict(settings),
                          line=check.line(*path)))
    return sorted(steps, key=lambda s: s.at_s)
