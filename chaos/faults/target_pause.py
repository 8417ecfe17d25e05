"""A target instance freezes (SIGSTOP) and resumes (SIGCONT): a GC pause, a stalled VM."""

from __future__ import annotations

import signal
from dataclasses import dataclass

from cachestorm.chaos.faults.process_signals import signal_if_same
from cachestorm.chaos.faults.target_select import TargetProcessFault


@dataclass
class TargetPause(TargetProcessFault):
    name = "target-pause"
    summary = "SIGSTOP a target instance, SIGCONT at the end"
    touches = ("targets",)

    def _apply(self) -> dict:
        for proc in self.state["processes"]:
            signal_if_same(proc["pid"], proc["started"], signal.SIGSTOP)
        return {"targets": [p["name"] for p in self.state["processes"]]}

    def expiry_actions(self) -> list[dict]:
        return [{"do": "signal", "pid": p["pid"], "started": p["started"], "signal": "SIGCONT"}
                for p in self.state["processes"] if p["started"] is not None]

    def _revert(self) -> dict:
        resumed = [p["name"] for p in self.state["processes"]
                   if signal_if_same(p["pid"], p["started"], signal.SIGCONT)]
        return {"resumed": resumed}
