"""Fault windows from the journal, and the phases of a run around them: settle / before / during / after."""

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
        """How many keys a hot-key-expiry fault expired (its `details.keys`), else None. A repeated
        expiry counts each key once per expiry (its revert's total)."""
        reverted = self.details.get("reverted")
        keys = reverted["keys"] if isinstance(reverted, dict) and "keys" in reverted else self.details.get("keys")
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

    def contains_second(self, second: int) -> bool:
        """Per-second data [s, s+1) belongs to the phase holding its middle."""
        return self.t_start <= second + 0.5 < self.t_end

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


def failed_faults(journal: list[dict]) -> list[dict]:
    """Fault records that did not take effect as planned (apply failed, never applied): no window of their
    own, but report.json lists them, with their error, so a run that did not test its fault says so."""
    return [{"name": str(r.get("what", "fault")), "t_start": r.get("t_start"), "t_end": r.get("t_end"),
             "outcome": r.get("outcome"), "error": (r.get("details") or {}).get("error"),
             "details": r.get("details") or {}}
            for r in journal if r.get("kind") == "fault" and r.get("outcome") == "failed"]


def load_window(journal: list[dict], default: tuple[float, float]) -> tuple[float, float]:
    """The [start, end] of the load step, or `default` when the journal has none."""
    for record in journal:
        if record.get("kind") == "load" and record.get("t_start") is not None:
            end = record.get("t_end")
            return float(record["t_start"]), float(default[1] if end is None else end)
    return default


MIN_EFFECT_S = 5.0
# The load's first seconds are not its steady state: Locust starts its users and their connections in
# the first second (a partial second of requests), the targets' first requests open their pools' use.
# They form the `settle` phase (kind "settle"), which no figure of "before" or the baseline counts.
# At most half of the time before the first fault.
BASELINE_SETTLE_S = 2.0


def effect_end(window: FaultWindow, min_effect_s: float = MIN_EFFECT_S) -> float:
    """A fault's effect lasts at least `min_effect_s`: an expiry is instantaneous, its herd is not."""
    return max(window.t_end, window.t_start + min_effect_s)


def settle_end(windows: list[FaultWindow], t_begin: float, t_finish: float, settle_s: float) -> float:
    """Where the settle period ends: `settle_s` after load start, at most half way to the first fault
    (or to the end of load without faults)."""
    first = windows[0].t_start if windows else t_finish
    return t_begin + max(0.0, min(settle_s, (first - t_begin) / 2))


def split_phases(windows: list[FaultWindow], t_begin: float, t_finish: float,
                 min_effect_s: float = MIN_EFFECT_S, settle_s: float = 0.0) -> list[Phase]:
    """settle (the load's first `settle_s`, see BASELINE_SETTLE_S), before (until the first fault),
    then per fault: during its effect window, and after it until the next one. A fault shorter than
    `min_effect_s` (an expiry, a kill) is "during" for that long."""
    settled = settle_end(windows, t_begin, t_finish, settle_s)
    phases = [Phase("settle", "settle", t_begin, settled)] if settled > t_begin else []
    t_begin = settled
    if not windows:
        return phases + [Phase("steady", "before", t_begin, t_finish)]
    if windows[0].t_start > t_begin:
        phases.append(Phase("before", "before", t_begin, windows[0].t_start))
    for n, window in enumerate(windows):
        label = window.name if len(windows) == 1 else f"{n + 1}. {window.name}"
        end = effect_end(window, min_effect_s)
        if n + 1 < len(windows):
            end = max(window.t_end, min(end, windows[n + 1].t_start))
        phases.append(Phase(f"during {label}", "during", window.t_start, end, window.name))
        following = windows[n + 1].t_start if n + 1 < len(windows) else t_finish
        if following > end:
            phases.append(Phase(f"after {label}", "after", end, following, window.name))
    return phases
