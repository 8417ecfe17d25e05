"""A target instance crashes (SIGKILL) and is restarted at the end by the conductor's callback."""

from __future__ import annotations

import signal
from dataclasses import dataclass

from cachestorm.chaos.faults.process_signals import signal_if_same
from cachestorm.chaos.faults.target_select import TargetProcessFault


@dataclass
class TargetKill(TargetProcessFault):
    name = "target-kill"
    summary = "SIGKILL a target instance; restart it at the end (conductor's callback)"
    touches = ("targets",)

    restart: bool = True

    def _apply(self) -> dict:
        killed = [p["name"] for p in self.state["processes"]
                  if signal_if_same(p["pid"], p["started"], signal.SIGKILL)]
        return {"killed": killed}

    def can_self_expire(self) -> bool:
        return not self.restart   # a restart needs the controller's callback

    def _revert(self) -> dict:
        if not self.restart:
            return {"restarted": []}
        handles = {t.name: t for t in self.context.targets}
        restarted, missing = [], []
        for proc in self.state["processes"]:
            handle = handles.get(proc["name"])
            if handle is not None and handle.restart is not None:
                handle.restart()
                restarted.append(proc["name"])
            else:
                missing.append(proc["name"])
        return {"restarted": restarted, "not_restartable": missing}
