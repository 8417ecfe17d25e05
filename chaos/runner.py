"""Runs an experiment: faults on a timeline, probes before / during / after, rollback always.

Every fault goes through the ledger (written before it takes effect) and ends in the journal as
one `fault` record whose start/end are its window. Faults are reverted at the end of their
window, when the hypothesis deviates with `deviation: abort`, and on `stop()` (end of run,
Ctrl-C, an exception in the caller) - `stop()` is idempotent and returns when all are reverted.

Phases: "before" is checked just before the first fault, "during" every `interval` from the first
fault until `settle` after the last one ends, "after" once at that moment (or at `stop()` if the
run ends first).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from cachestorm.chaos.context import ChaosContext
from cachestorm.chaos.experiment import Experiment, Step
from cachestorm.chaos.ledger import Ledger
from cachestorm.chaos.probes import LiveNumbers

from cachestorm.core.runfolder import Journal


@dataclass
class _Applied:
    index: int
    step: Step
    fault: object
    ledger_id: str
    start_wall: float
    details: dict = field(default_factory=dict)


class ExperimentRunner:
    def __init__(self, experiment: Experiment, context: ChaosContext, journal: Journal,
                 ledger: Ledger | None = None, numbers: LiveNumbers | None = None, on_abort=None):
        self.experiment = experiment
        self.context = context
        self.journal = journal
        self.ledger = ledger or Ledger(context.ledger_path)
        run_dir = Path(context.run_dir) if context.run_dir else journal.path.parent
        self.numbers = numbers or LiveNumbers(run_dir)
        self.on_abort = on_abort
        self.abort_event = threading.Event()
        self.timeline_done = threading.Event()   # every timed step ran and "after" was checked
        self._stop_event = threading.Event()
        self._finished = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._active: dict[int, _Applied] = {}
        self._faults_log: list[dict] = []
        self._probe_log: list[dict] = []
        self._errors: list[str] = []
        self._after_checked = False
        self._t0: float | None = None
        # build and check every fault now: a bad setting or a remote address fails before anything runs
        self._faults = []
        for step in experiment.method:
            fault = step.build().bind(context, step.for_s)
            fault.check()
            self._faults.append(fault)

    # -- public API ------------------------------------------------------------------
    def start(self) -> ExperimentRunner:
        if self._thread is not None:
            return self
        self._t0 = self.context.t0_monotonic if self.context.t0_monotonic is not None else time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"chaos-{self.experiment.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Revert everything still active; idempotent; returns when done."""
        self._stop_event.set()
        thread = self._thread
        if thread is None:
            self._finished.set()
            return
        if thread is threading.current_thread():
            return  # called from our own abort path (e.g. via the load's stop hook): the loop exits
        thread.join()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the timeline is over, the hypothesis aborted the run, or stop(); True if so."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.timeline_done.is_set() or self.abort_event.is_set() or self._finished.is_set():
                return True
            remaining = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
            if remaining <= 0:
                return False
            self._finished.wait(remaining)

    def active_faults(self) -> list[dict]:
        with self._lock:
            return [{"fault": a.step.fault, "at": a.step.at_s, "for": a.step.for_s,
                     "settings": a.step.settings, "self_expiry": a.fault.self_expiry} for a in self._active.values()]

    def unknown_probes(self) -> list[str]:
        """Each probe and phase none of whose checks had data ("p99 stays bounded (before)"): the
        hypothesis was not checked there, so it is not verified."""
        seen: dict[tuple[str, str], bool] = {}
        for entry in self._probe_log:
            key = (entry["what"].removeprefix("probe "), entry["details"]["phase"])
            seen[key] = seen.get(key, False) or entry["outcome"] != "unknown"
        return [f"{name} ({phase})" for (name, phase), had_data in seen.items() if not had_data]

    def summary(self) -> dict:
        deviations = [p for p in self._probe_log if p["outcome"] == "deviated"]
        unknown = self.unknown_probes()
        if deviations:
            hypothesis = "deviated"
        elif unknown:
            hypothesis = "not_verified"  # no data is not a pass
        else:
            hypothesis = "held" if self._probe_log else "not_checked"
        return {"experiment": self.experiment.name, "path": self.experiment.path,
                "deviation_policy": self.experiment.deviation, "hypothesis": hypothesis,
                "unknown_probes": unknown,
                "aborted": self.abort_event.is_set(), "faults": list(self._faults_log),
                "probes": list(self._probe_log), "deviations": deviations, "errors": list(self._errors),
                "still_active": self.active_faults()}

    # -- the timeline thread ---------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - (self._t0 or time.monotonic())

    def _run(self) -> None:
        reason = "end of run"
        try:
            self._timeline()
            if self.abort_event.is_set():
                reason = "hypothesis deviated (abort)"
        except BaseException as exc:  # noqa: BLE001 - whatever happens, faults are reverted below
            reason = f"error: {exc.__class__.__name__}: {exc}"
            self._errors.append(reason)
        finally:
            self._revert_all(reason)
            self._record_never_applied()
            if not self._after_checked and not self.abort_event.is_set():
                self._check("after")
            self._record_hypothesis()
            self._finished.set()

    def _record_hypothesis(self) -> None:
        """One journal record of the verdict; "not_verified" names the probes without data, and a
        run whose hypothesis was not verified is marked so (core.runfiles.first_failure)."""
        if not self._probe_log:
            return
        summary = self.summary()
        details = {"experiment": self.experiment.name, "hypothesis": summary["hypothesis"],
                   "deviations": len(summary["deviations"]), "unknown_probes": summary["unknown_probes"]}
        if summary["hypothesis"] == "not_verified":
            details["error"] = (f"no data for probe {', '.join(summary['unknown_probes'])}: "
                                "the steady-state hypothesis was not verified")
        wall, _t = self.journal.now()
        outcome = "not_verified" if summary["hypothesis"] == "not_verified" else "ok"  # details say held/deviated
        self.journal.record("hypothesis", "hypothesis", wall, wall, outcome, details)

    def failed_faults(self) -> list[dict]:
        """Journal records of faults that did not do what the timeline said (apply or revert failed, or
        never applied): a run with any of them did not test what it claims."""
        return [entry for entry in self._faults_log if entry.get("outcome") != "ok"]

    def _record_never_applied(self) -> None:
        attempted = {(entry["details"].get("fault"), entry["details"].get("at")) for entry in self._faults_log}
        now = time.time()
        aborted = self.abort_event.is_set()
        for step in self.experiment.method:
            if (step.fault, step.at_s) not in attempted:
                # an abort before a fault's time is the policy working, but the run did not do what it
                # said: the fault is recorded as never applied, so the run, report and gate say so
                why = (f"never applied: the steady-state hypothesis deviated before {step.at_s:g}s and the "
                       "experiment aborted (deviation: abort)") if aborted else \
                    f"never applied: the run ended before {step.at_s:g}s"
                self._finish_record(step, now, "failed", {"error": why},
                                    "hypothesis deviated (abort)" if aborted else "run ended")

    def _timeline(self) -> None:
        exp = self.experiment
        events: list[tuple[float, int, str, int]] = []   # (time, order, kind, step index)
        for index, step in enumerate(exp.method):
            events.append((step.at_s, 1, "apply", index))
            if step.end_s is not None and not self._faults[index].one_shot:
                events.append((step.end_s, 0, "revert", index))
        events.sort()
        first_at = min((s.at_s for s in exp.method), default=0.0)
        after_at = exp.duration_s() + exp.settle_s
        next_probe = first_at + exp.interval_s
        before_done = False
        while not self._stop_event.is_set() and not self.abort_event.is_set():
            now = self.elapsed()
            if not before_done and now >= first_at - 0.05:
                self._check("before")
                before_done = True
            while events and events[0][0] <= now:
                _at, _order, kind, index = events.pop(0)
                if kind == "apply":
                    self._apply(index)
                else:
                    self._revert(index, "end of window")
            if before_done and now >= next_probe and now < after_at:
                if now > first_at:
                    self._check("during")
                next_probe = max(next_probe + exp.interval_s, now)
            if not events and now >= after_at and not self._after_checked:
                self._check("after")
                self._after_checked = True
                self.timeline_done.set()
            if self.abort_event.is_set():
                return
            wake = [after_at] if not self._after_checked else []
            wake += [events[0][0]] if events else []
            wake += [next_probe] if now < after_at else []
            wake += [first_at - 0.05] if not before_done else []
            if not wake:
                self._stop_event.wait()  # only faults without an end are left: they last until stop()
                return
            self._stop_event.wait(max(0.0, min(wake) - self.elapsed()))

    # -- faults ----------------------------------------------------------------------
    def _apply(self, index: int) -> None:
        step, fault = self.experiment.method[index], self._faults[index]
        start = time.time()
        ledger_id = ""
        try:
            fault.prepare()
            ledger_id = self.ledger.add(fault, self.context)
            start = time.time()  # the window starts when the fault takes effect, after the ledger write
            with self._lock:
                applied = _Applied(index, step, fault, ledger_id, start)
                self._active[index] = applied
            applied.details = fault.apply()
            if fault.self_expiry:  # who reverts it should this process die, for the journal
                applied.details["self_expiry"] = fault.self_expiry
        except Exception as exc:  # noqa: BLE001 - one failed fault must not stop the rollback of others
            error = f"{exc.__class__.__name__}: {exc}"
            self._errors.append(f"{step.fault} at {step.at_s:g}s: {error}")
            with self._lock:
                self._active.pop(index, None)
            revert_details = self._safe_revert(fault, ledger_id)
            self._finish_record(step, start, "failed", {"error": error, "reverted": revert_details},
                                "apply failed")
            return
        if fault.one_shot or step.for_s == 0:
            self._revert(index, "one-shot" if fault.one_shot else "end of window")

    def _revert(self, index: int, reason: str) -> None:
        with self._lock:
            applied = self._active.pop(index, None)
        if applied is None:
            return
        try:
            revert_details = applied.fault.revert()
            outcome = "ok"
            self.ledger.mark_reverted(applied.ledger_id)
        except Exception as exc:  # noqa: BLE001 - recorded; the ledger keeps it for `chaos heal`
            revert_details = {"error": f"{exc.__class__.__name__}: {exc}"}
            outcome = "revert_failed"
            self._errors.append(f"revert {applied.step.fault}: {revert_details['error']}")
        details = {"applied": applied.details, "reverted": revert_details}
        if outcome == "ok":
            outcome = self._judge_touched(applied, details)
        self._finish_record(applied.step, applied.start_wall, outcome, details, reason)

    def _judge_touched(self, applied: _Applied, details: dict) -> str:
        """A fault that touched nothing (0 keys expired, 0 commands faulted, 0 connections cut) tested
        nothing: its record fails, with one line saying why, and so does the run."""
        try:
            touched = applied.fault.touched(details["applied"], details["reverted"])
        except Exception as exc:  # noqa: BLE001 - a count that cannot be read is said, not fatal
            touched = None
            details["touched_error"] = f"{exc.__class__.__name__}: {exc}"
        if touched is None:
            return "ok"
        details["touched"] = touched
        if touched["count"] > 0:
            touched.pop("why", None)  # why it would be 0: not for a fault that touched something
            return "ok"
        step = applied.step
        line = f"{step.fault} at {step.at_s:g} s {_nothing(touched['unit'])}" + (
            f": {touched['why']}" if touched.get("why") else "")
        details["error"] = line
        self._errors.append(line)
        return "failed"

    def _safe_revert(self, fault, ledger_id: str) -> dict:
        try:
            details = fault.revert()
            if ledger_id:
                self.ledger.mark_reverted(ledger_id, "apply failed")
            return details
        except Exception as exc:  # noqa: BLE001
            return {"error": f"{exc.__class__.__name__}: {exc}"}

    def _revert_all(self, reason: str) -> None:
        with self._lock:
            indexes = sorted(self._active, reverse=True)
        for index in indexes:   # newest first: undo in the reverse order of application
            self._revert(index, reason)

    def _finish_record(self, step: Step, start: float, outcome: str, details: dict, reason: str) -> None:
        end = time.time()
        payload = {"fault": step.fault, "settings": step.settings, "at": step.at_s, "for": step.for_s,
                   "experiment": self.experiment.name, "ended_by": reason, **details}
        # hot-key faults: surface {"keys", "key_ids"} at the top of the details
        for key in ("keys", "key_ids"):
            if key in details.get("applied", {}):
                payload[key] = details["applied"][key]
        entry = self.journal.record(f"fault {step.fault}", "fault", start, end, outcome, payload)
        self._faults_log.append(entry)

    # -- probes ----------------------------------------------------------------------
    def _check(self, phase: str) -> None:
        probes = [p for p in self.experiment.probes if phase in p.phases]
        if not probes:
            return
        try:
            self.numbers.refresh()
        except Exception as exc:  # noqa: BLE001 - unreadable files mean no data, not a crash
            self._errors.append(f"probe refresh: {exc}")
        wall, t_now = self.journal.now()
        deviated = False
        for probe in probes:
            try:
                value = self.numbers.value(probe.metric, t_now, probe.window_s)
            except Exception as exc:  # noqa: BLE001
                value = None
                self._errors.append(f"probe {probe.name}: {exc}")
            outcome = probe.verdict(value)
            details = {"phase": phase, "metric": probe.metric, "value": value, "min": probe.min,
                       "max": probe.max, "window_s": probe.window_s, "experiment": self.experiment.name}
            entry = self.journal.record(f"probe {probe.name}", "probe", wall, wall, outcome, details)
            self._probe_log.append(entry)
            deviated = deviated or outcome == "deviated"
        if deviated and self.experiment.deviation == "abort" and not self.abort_event.is_set():
            self.abort_event.set()
            if self.on_abort is not None:
                try:
                    self.on_abort()
                except Exception as exc:  # noqa: BLE001
                    self._errors.append(f"on_abort: {exc}")


def _nothing(unit: str) -> str:
    """"keys expired over 4 expiries" -> "expired 0 keys over 4 expiries": the count in words."""
    words = unit.split(" ")
    if len(words) >= 2 and "+" not in unit and words[0] in ("keys", "commands", "connections"):
        return f"{words[1]} 0 {words[0]}" + (" " + " ".join(words[2:]) if words[2:] else "")
    return f"touched 0 {unit}"
