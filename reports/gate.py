"""SLO gate: evaluate a YAML list of SLOs over analysed runs.

    slos:
      - name: p99 under a hot-key expiry
        metric: p99_ms_during_fault        # any headline metric (docs/report-schema.md)
        max: 250                           # and/or min:
        where: {strategy: xfetch, experiment: hot-key-expiry}   # optional filter on the run
    allow_unhealthy_baseline: false        # default: a run whose baseline was unhealthy fails the gate
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from cachestorm.reports.compare import as_analysis
from cachestorm.reports.headline import CATALOG, comparable

from cachestorm.core.domains import DOMAINS
from cachestorm.core.errors import CachestormError
from cachestorm.core.runfiles import incomplete
from cachestorm.core.yamlload import safe_load_unique

WHERE_FIELDS = ("strategy", "experiment", "domain", "label", "run_id")
# a `where` field -> the check of a value no gated run has: None if it names something known, else why not
KnownCheck = Callable[[str], str | None]


@dataclass(frozen=True)
class Slo:
    name: str
    metric: str
    max: float | None = None
    min: float | None = None
    where: dict = field(default_factory=dict)


@dataclass
class SloResult:
    name: str
    metric: str
    run: str | None
    run_dir: str | None
    value: float | str | None
    limit: float | None
    bound: str  # "max" | "min"
    passed: bool
    excess: float | None = None  # how far past the limit (positive = violated), in the metric's unit
    skipped: bool = False
    message: str = ""


@dataclass
class GateResult:
    config: str
    results: list[SloResult]

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.results)

    @property
    def failures(self) -> list[SloResult]:
        return [result for result in self.results if not result.passed]

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def to_dict(self) -> dict:
        return {"config": self.config, "passed": self.passed, "results": [asdict(r) for r in self.results]}


def load_slos(config_path: str | Path) -> list[Slo]:
    return _load(config_path)[0]


def _load(config_path: str | Path) -> tuple[list[Slo], bool]:
    """The SLOs and `allow_unhealthy_baseline` (default false)."""
    path = Path(config_path)
    if not path.exists():
        raise CachestormError(f"{path}: no such gate config; pass a YAML file with a `slos:` list")
    try:
        data = safe_load_unique(path.read_bytes().decode("utf-8"))  # a key written twice is an error
    except UnicodeDecodeError:
        raise CachestormError(f"{path}: not a text file; a gate config is a UTF-8 YAML file") from None
    except OSError as exc:
        raise CachestormError(f"{path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise CachestormError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("slos"), list) or not data["slos"]:
        raise CachestormError(f"{path}: field `slos` must be a non-empty list of {{name, metric, max|min, where}}")
    allow = data.get("allow_unhealthy_baseline", False)
    if not isinstance(allow, bool):
        raise CachestormError(f"{path}: field `allow_unhealthy_baseline` must be true or false, not {allow!r}")
    return [_parse_slo(path, n, item) for n, item in enumerate(data["slos"])], allow


def _parse_slo(path: Path, n: int, item) -> Slo:
    where = f"{path}: slos[{n}]"
    if not isinstance(item, dict):
        raise CachestormError(f"{where}: must be a mapping with name, metric and max or min")
    unknown = set(item) - {"name", "metric", "max", "min", "where"}
    if unknown:
        raise CachestormError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; "
                              "allowed: name, metric, max, min, where")
    metric = item.get("metric")
    if not isinstance(metric, str) or not (metric in CATALOG or metric.startswith("nines_within_")):
        raise CachestormError(f"{where}.metric: {metric!r} is not a known metric; use one of "
                              f"{', '.join(CATALOG)} or nines_within_<M>s")
    limits = {}
    for bound in ("max", "min"):
        value = item.get(bound)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise CachestormError(f"{where}.{bound}: {value!r} is not a number")
        if value is not None and not math.isfinite(value):  # NaN: every comparison false, so every value passed
            raise CachestormError(f"{where}.{bound}: {value!r} is not a finite number")
        limits[bound] = None if value is None else float(value)
    if limits["max"] is None and limits["min"] is None:
        raise CachestormError(f"{where}: needs `max` or `min` (a number)")
    if limits["max"] is not None and limits["min"] is not None and limits["min"] > limits["max"]:
        raise CachestormError(f"{where}: min {limits['min']:g} is above max {limits['max']:g}; no value could pass")
    filters = item.get("where") or {}
    if not isinstance(filters, dict) or any(k not in WHERE_FIELDS for k in filters):
        raise CachestormError(f"{where}.where: must map {', '.join(WHERE_FIELDS)} to a value or a list of values")
    name = item.get("name", metric)
    if not isinstance(name, str) or not name:
        raise CachestormError(f"{where}.name: must be a non-empty string")
    return Slo(name=name, metric=metric, max=limits["max"], min=limits["min"], where=dict(filters))


def evaluate_gate(config_path: str | Path, run_dirs: list, known: dict[str, KnownCheck] | None = None) -> GateResult:
    """Evaluate the SLOs in `config_path` over runs (run folders, or analysis dicts already computed).

    `known`: checks of `where` values by field (see KnownCheck), from a caller that knows the strategies
    and experiments (the reports read run folders only); domains are checked by default."""
    slos, allow_unhealthy = _load(config_path)
    if not run_dirs:
        raise CachestormError("no runs to gate; pass one or more run folders")
    analyses = [as_analysis(run) for run in run_dirs]
    checks = {"domain": _known_domain, **(known or {})}
    for n, slo in enumerate(slos):
        _check_where(f"{config_path}: slos[{n}].where", slo.where, analyses, checks)
    return GateResult(str(config_path), [*_completion(analyses), *_baselines(analyses, allow_unhealthy),
                                         *(r for slo in slos for r in evaluate_slo(slo, analyses))])


def _baselines(analyses: list[dict], allow: bool) -> list[SloResult]:
    """A run whose baseline was unhealthy (headline `baseline_healthy` false: overloaded before any
    fault) fails the gate with that reason, whatever its numbers say, unless the config allows it."""
    results = []
    for analysis in analyses:
        if (analysis.get("headline") or {}).get("baseline_healthy") is not False:
            continue
        run = analysis.get("run") or {}
        why = (analysis.get("baseline") or {}).get("sentence") or "unhealthy baseline"
        results.append(SloResult("healthy baseline", "baseline_healthy", run.get("label"), run.get("path"),
                                 False, None, "min", allow, skipped=allow,
                                 message=(why + " (allowed: allow_unhealthy_baseline)") if allow else why))
    return results


def _completion(analyses: list[dict]) -> list[SloResult]:
    """A run that failed or was interrupted fails the gate whatever its numbers say."""
    results = []
    for analysis in analyses:
        run = analysis.get("run") or {}
        if why := incomplete(run):
            verdict = ("the steady-state hypothesis was not verified" if run.get("outcome") == "not_verified"
                       else "the run did not complete")
            results.append(SloResult("run completed", "outcome", run.get("label"), run.get("path"),
                                     run.get("outcome"), None, "max", False,
                                     message=f"{verdict} ({why})"))
    return results


def _known_domain(value: str) -> str | None:
    return None if value in DOMAINS else f"unknown domain; choose one of {', '.join(DOMAINS)}"


def _check_where(location: str, where: dict, analyses: list[dict], checks: dict[str, KnownCheck]) -> None:
    """A `where` value must name a known strategy, domain or experiment (or one a gated run has, e.g. an
    experiment from your own file): a typo would match nothing and check nothing."""
    for key, wanted in where.items():
        check = checks.get(key)
        if check is None:
            continue  # labels and run ids are the user's own names
        seen = {str((a.get("run") or {}).get(key)) for a in analyses}
        for value in wanted if isinstance(wanted, list) else [wanted]:
            if str(value) in seen:
                continue
            problem = check(str(value))
            if problem is None:
                continue
            raise CachestormError(f"{location}.{key}: {value!r} names nothing known ({problem}), "
                                  "so the SLO would check no run")


def evaluate_slo(slo: Slo, analyses: list[dict]) -> list[SloResult]:
    matching = [a for a in analyses if _matches(slo.where, a.get("run") or {})]
    if not matching:  # checked nothing: that is not a pass
        return [SloResult(slo.name, slo.metric, None, None, None, slo.max if slo.max is not None else slo.min,
                          "max" if slo.max is not None else "min", False,
                          message=f"no run matched where {slo.where}: nothing was checked")]
    results = []
    for analysis in matching:
        run = analysis.get("run") or {}
        raw = (analysis.get("headline") or {}).get(slo.metric)
        value = comparable(raw)
        notes = analysis.get("headline_notes") or {}
        if slo.metric in (notes.get("at_least") or []):
            value = float("inf")  # every read was consistent: no finite number of nines is violated
        base = {"name": slo.name, "metric": slo.metric, "run": run.get("label"), "run_dir": run.get("path"),
                "value": raw}
        absent = (analysis.get("missing") or {}).get(slo.metric)
        if absent is not None:  # its source file is missing or empty: no data is not a pass, nor a skip
            results.append(SloResult(**base, limit=slo.max if slo.max is not None else slo.min,
                                     bound="max" if slo.max is not None else "min", passed=False,
                                     message=f"{slo.metric}: no data ({absent})"))
            continue
        na = (notes.get("not_applicable") or {}).get(slo.metric)
        if value is None and na is not None:  # e.g. counters in a profiles run: nothing to hold it to
            results.append(SloResult(**base, limit=slo.max if slo.max is not None else slo.min,
                                     bound="max" if slo.max is not None else "min", passed=True, skipped=True,
                                     message=f"{slo.metric}: n/a ({na['why']})"))
            continue
        if value is None:
            results.append(SloResult(**base, limit=slo.max if slo.max is not None else slo.min,
                                     bound="max" if slo.max is not None else "min", passed=False,
                                     message=f"{slo.metric} was not measured in this run"))
            continue
        for bound, limit in (("max", slo.max), ("min", slo.min)):
            if limit is None:
                continue
            excess = value - limit if bound == "max" else limit - value
            passed = excess <= 0
            shown = raw if isinstance(raw, str) else "all reads consistent" if value == float("inf") else round(value, 6)
            message = (f"{slo.metric} = {shown} {'<=' if bound == 'max' else '>='} {limit:g}" if passed else
                       f"{slo.metric} = {shown} is {'over' if bound == 'max' else 'under'} the {bound} {limit:g}"
                       f" by {abs(excess):.6g}")
            results.append(SloResult(**base, limit=limit, bound=bound, passed=passed,
                                     excess=excess if excess not in (float("inf"), float("-inf")) else None,
                                     message=message))
    return results


def _matches(where: dict, run: dict) -> bool:
    for key, wanted in where.items():
        actual = run.get(key)
        options = wanted if isinstance(wanted, list) else [wanted]
        if str(actual) not in {str(o) for o in options}:
            return False
    return True
