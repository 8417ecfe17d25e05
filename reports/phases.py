"""Fault windows from the journal, and the phases of a run around them: before / during / after."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FaultWindow:
    name: str
    t_start: float
    t_end: float
    details: dict = field(default_factory=dict)

    @property
    def expired_keys(self) -> int | None:
        """How many keys a hot-key-expiry fault expired (its `details.keys`), else None."""
        keys = self.details.get("keys")
        if isinstance(keys, bool) or keys is None:
            return None
        if isinstance(keys, int | float):
            return int(keys)
        if isinstance(keys, list | tuple):
            return len(keys)
        return None


@dataclass(frozen=True)
class Phase:
    name: str
    kind: str  # before | during | after
    t_start: float
    t_end: float
    fault: str | None = None

    def contains(self, t: float) -> bool:
        return self.t_start <= t < self.t_end

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "t_start": self.t_start, "t_end": self.t_end,
                "fault": self.fault}


def fault_windows(journal: list[dict], run_end: float) -> list[FaultWindow]:
    """Fault records (kind "fault") that were applied, sorted by start; an open window ends at run end."""
    windows = []
    for record in journal:
        if record.get("kind") != "fault" or record.get("outcome") == "failed":
            continue
        t_start = record.get("t_start")
        if t_start is None:
            continue
        t_end = record.get("t_end")
        windows.append(FaultWindow(str(record.get("what", "fault")), float(t_start),
                                   float(run_end if t_end is None else t_end), record.get("details") or {}))
    return sorted(windows, key=lambda w: w.t_start)


def load_window(journal: list[dict], default: tuple[float, float]) -> tuple[float, float]:
    """The [start, end] of the load step, or `default` when the journal has none."""
    for record in journal:
        if record.get("kind") == "load" and record.get("t_start") is not None:
            end = record.get("t_end")
            return float(record["t_start"]), float(default[1] if end is None else end)
    return default


def split_phases(windows: list[FaultWindow], t_begin: float, t_finish: float) -> list[Phase]:
    """before (until the first fault), then per fault: during it, and after it until the next one."""
    if not windows:
        return [Phase("steady", "before", t_begin, t_finish)]
    phases = []
    if windows[0].t_start > t_begin:
        phases.append(Phase("before", "before", t_begin, windows[0].t_start))
    for n, window in enumerate(windows):
        label = window.name if len(windows) == 1 else f"{n + 1}. {window.name}"
        end = max(window.t_end, window.t_start + 1e-3)
        phases.append(Phase(f"during {label}", "during", window.t_start, end, window.name))
        following = windows[n + 1].t_start if n + 1 < len(windows) else t_finish
        if following > end:
            phases.append(Phase(f"after {label}", "after", end, following, window.name))
    return phases


def in_any_fault(t: float, windows: list[FaultWindow]) -> bool:
    return any(w.t_start <= t < max(w.t_end, w.t_start + 1.0) for w in windows)
