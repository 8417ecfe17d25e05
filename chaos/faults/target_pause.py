"""A target instance freezes (SIGSTOP) and resumes (SIGCONT): a GC pause, a stalled VM."""

from __future__ import annotations

import signal
from dataclasses import dataclass

from chaos.faults.base import Fault
from chaos.faults.process_signals import signal_if_same, start_time
from chaos.faults.target_select import select_targets


@dataclass
class TargetPause(Fault):
    name = "target-pause"
    summary = "SIGSTOP a target instance, SIGCONT at the end"
    touches = ("targets",)

    target: str = ""     # a target name, "*" for all; "": the first

    def check_settings(self) -> None:
        select_targets(self.context.targets, self.target, self.name, need_pid=True)

    def _prepare(self) -> dict:
        chosen = select_targets(self.context.targets, self.target, self.name, need_pid=True)
        return {"processes": [{"name": t.name, "pid": t.pid, "started": start_time(t.pid)} for t in chosen]}

    def _apply(self) -> dict:
        for proc in self.state["processes"]:
            signal_if_same(proc["pid"], proc["started"], signal.SIGSTOP)
        return {"targets": [p["name"] for p in self.state["processes"]]}

    def _revert(self) -> dict:
        resumed = [p["name"] for p in self.state["processes"]
                   if signal_if_same(p["pid"], p["started"], signal.SIGCONT)]
        return {"resumed": resumed}
