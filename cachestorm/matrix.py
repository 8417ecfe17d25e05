"""A matrix: every strategy x every experiment, same traffic, one shared stack, one comparison."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

from cachestorm.conductor import RunSettings, acquire_run_lock, plan_experiment, run, validate_strategy
from cachestorm.core import interrupts
from cachestorm.core.errors import CachestormError
from cachestorm.core.runfolder import make_folder
from cachestorm.stack import StackState, guardian, start_stack, stop_stack


@dataclasses.dataclass
class MatrixResult:
    out_dir: Path
    run_dirs: list[Path]
    report_paths: list[Path]


def run_matrix(base: RunSettings, strategies: list[str], experiments: list[str | None], out: str,
               name: str = "matrix", on_progress: Callable[[str, int, int], None] | None = None) -> MatrixResult:
    with interrupts.armed(), guardian.guarded("matrix", orphans=True):  # its shared stack goes with it, even if this process is SIGKILLed
        return _run_matrix(base, strategies, experiments, out, name, on_progress)


def _run_matrix(base: RunSettings, strategies: list[str], experiments: list[str | None], out: str,
                name: str, on_progress: Callable[[str, int, int], None] | None) -> MatrixResult:
    if not strategies:
        raise CachestormError("give at least one strategy")
    for strategy in strategies:
        validate_strategy(strategy)
    for experiment in experiments:  # fail on a bad name or a fault after the load before anything starts
        plan_experiment(dataclasses.replace(base, experiment=experiment))
    dataclasses.replace(base, strategy=strategies[0]).validate()  # and on a bad setting
    out_dir = Path(out) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    make_folder(out_dir, exist_ok=False)
    combos = [(s, e) for e in experiments for s in strategies]
    stack: StackState | None = None
    run_dirs: list[Path] = []
    release_lock = acquire_run_lock()  # one run at a time in this folder: the matrix's runs are one
    try:
        from cachestorm.conductor import _existing_stack

        stack = _existing_stack(base.stack)
        owned = stack is None
        if owned:
            stack = start_stack(base.stack)
        for index, (strategy, experiment) in enumerate(combos):
            if on_progress:
                on_progress(f"{strategy} × {experiment or 'no fault'}", index, len(combos))
            settings = dataclasses.replace(base, strategy=strategy, experiment=experiment, out=str(out_dir),
                                           label=f"{strategy}-{experiment or 'steady'}",
                                           explicit=base.explicit | {"strategy"})
            run_dirs.append(run(settings, stack=stack))
        if on_progress:
            on_progress("report", len(combos), len(combos))
    finally:
        if stack is not None and owned:
            stop_stack(stack)
        release_lock()
    return MatrixResult(out_dir, run_dirs, render_comparison(run_dirs, out_dir))


def render_comparison(run_dirs: list[Path], out_dir: Path) -> list[Path]:
    try:
        from cachestorm.reports import render_comparison as render
    except ImportError:
        return []
    return [Path(p) for p in render(run_dirs, out_dir)]
