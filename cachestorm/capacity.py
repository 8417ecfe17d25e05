"""Capacity planning: an open-model step load per strategy, then the highest rate that meets the SLOs.

One run folder per strategy (with `capacity.json` and a capacity section in its report); several
strategies share one stack, like a matrix, and get `capacity.html`/`.md`/`.json` side by side.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

from cachestorm.conductor import RunSettings, acquire_run_lock, run, validate_strategy
from cachestorm.core import interrupts
from cachestorm.core.defaults import DEFAULTS, LIMITS
from cachestorm.core.errors import CachestormError
from cachestorm.core.runfolder import RunFolder, make_folder
from cachestorm.stack import StackState, guardian, start_stack, stop_stack

# Locust stops at the end of the shape; -t is only a safety net for a slow boot
DURATION_MARGIN_S = 3.0


@dataclasses.dataclass
class CapacityPlan:
    strategies: list[str]
    max_rate: float = DEFAULTS.capacity_max_rate
    steps: int = DEFAULTS.capacity_steps
    hold_s: float = DEFAULTS.capacity_hold_s
    slo_p99_ms: float = DEFAULTS.capacity_slo_p99_ms
    max_error_rate: float = DEFAULTS.capacity_max_error_rate

    def validate(self) -> None:
        if not self.strategies:
            raise CachestormError("--strategy: give at least one strategy, e.g. cache-aside")
        if not 0 < self.max_rate <= LIMITS.max_rate:  # NaN too
            raise CachestormError(f"--max-rate must be a positive number of requests per second, at most "
                                  f"{LIMITS.max_rate:,.0f} (what one Locust process schedules on time)")
        if not 1 <= self.steps <= 50:
            raise CachestormError("--steps must be between 1 and 50")
        if self.steps * self.hold_s > LIMITS.max_duration_s:
            raise CachestormError(f"--steps x --hold is the load's length: at most {LIMITS.max_duration_s / 3600:g}h "
                                  f"(got {self.steps * self.hold_s:g}s)")
        if self.hold_s < 2:
            raise CachestormError("--hold must be at least 2s (the first second of each step is skipped)")
        if self.slo_p99_ms <= 0:
            raise CachestormError("--slo-p99 must be positive, e.g. 100ms")
        if not 0 <= self.max_error_rate <= 1:
            raise CachestormError("--max-error-rate must be a fraction between 0 and 1, e.g. 0.01")
        for strategy in self.strategies:
            validate_strategy(strategy)


@dataclasses.dataclass
class CapacityResult:
    out_dir: Path                   # the run folder (one strategy) or the folder holding them
    run_dirs: list[Path]
    capacities: list[dict]
    report_paths: list[Path]


def step_settings(base: RunSettings, plan: CapacityPlan, strategy: str, out: str) -> RunSettings:
    return dataclasses.replace(
        base, strategy=strategy, rate=plan.max_rate, shape="step",
        shape_args=f"steps={plan.steps},hold={plan.hold_s:g}",
        duration_s=plan.steps * plan.hold_s + DURATION_MARGIN_S, warm=True, experiment=None, out=out,
        label=base.label or f"capacity-{base.domain}-{strategy}", render=False)


def run_capacity(base: RunSettings, plan: CapacityPlan,
                 on_progress: Callable[[str, int, int], None] | None = None) -> CapacityResult:
    with interrupts.armed(), guardian.guarded("capacity", orphans=True):  # its shared stack goes with it, even if this process is SIGKILLed
        return _run_capacity(base, plan, on_progress)


def _run_capacity(base: RunSettings, plan: CapacityPlan,
                  on_progress: Callable[[str, int, int], None] | None) -> CapacityResult:
    plan.validate()
    step_settings(base, plan, plan.strategies[0], base.out).validate()  # the runs' own settings, rate and length
    several = len(plan.strategies) > 1
    # absolute: Locust runs from the repository root and writes into the run folder by path
    base = dataclasses.replace(base, out=str(Path(base.out).resolve()))
    out_dir = Path(base.out) / f"capacity-{time.strftime('%Y%m%d-%H%M%S')}" if several else Path(base.out)
    make_folder(out_dir, exist_ok=not several)
    stack: StackState | None = None
    owned = False
    run_dirs: list[Path] = []
    capacities: list[dict] = []
    release_lock = acquire_run_lock()  # one run at a time in this folder: the sweep's runs are one
    try:
        from cachestorm.conductor import _existing_stack

        stack = _existing_stack(base.stack)
        if stack is None and several:  # one stack for every strategy; a single run starts its own
            stack, owned = start_stack(base.stack), True
        for index, strategy in enumerate(plan.strategies):
            if on_progress:
                on_progress(strategy, index, len(plan.strategies))
            settings = step_settings(base, plan, strategy, str(out_dir))
            if several:
                settings.label = f"capacity-{strategy}"
            run_dir = run(settings, stack=stack)
            run_dirs.append(run_dir)
            capacities.append(write_capacity(run_dir, plan))
        if on_progress:
            on_progress("report", len(plan.strategies), len(plan.strategies))
    finally:
        if owned and stack is not None:
            stop_stack(stack)
        release_lock()
    reports = _render(run_dirs, capacities, out_dir if several else None, base.render)
    return CapacityResult(out_dir if several else run_dirs[0], run_dirs, capacities, reports)


def write_capacity(run_dir: Path, plan: CapacityPlan) -> dict:
    """Analyse the run's steps and write capacity.json next to its other files."""
    from cachestorm.reports.capacity import analyze_capacity
    from cachestorm.reports.jsonout import to_strict_json, write_json

    capacity = to_strict_json(analyze_capacity(run_dir, plan.slo_p99_ms, plan.max_error_rate))
    write_json(capacity, RunFolder(run_dir).capacity_path)
    return capacity


def _render(run_dirs: list[Path], capacities: list[dict], comparison_dir: Path | None, render: bool) -> list[Path]:
    if not render:
        return []
    from cachestorm.reports.render import render_capacity_comparison, render_run

    paths: list[Path] = []
    for run_dir in run_dirs:
        paths += render_run(run_dir)  # picks up capacity.json
    if comparison_dir is not None:
        paths += render_capacity_comparison(capacities, comparison_dir)
    return paths
