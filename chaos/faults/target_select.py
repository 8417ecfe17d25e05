"""Choosing target instances for a process fault by name, and the base of those faults."""

from __future__ import annotations

from dataclasses import dataclass

from cachestorm.chaos.faults.base import Fault
from cachestorm.chaos.faults.process_signals import start_time

from cachestorm.core.errors import CachestormError


def select_targets(targets: list, wanted: str, fault: str, need_pid: bool = False) -> list:
    if not targets:
        raise CachestormError(f"fault {fault!r} needs target processes but the context has none "
                              "(run it from `cachestorm run`, which starts the targets)")
    if wanted == "*":
        chosen = list(targets)
    elif wanted:
        chosen = [t for t in targets if t.name == wanted]
        if not chosen:
            raise CachestormError(f"fault {fault!r}: no target named {wanted!r} "
                                  f"(targets: {', '.join(t.name for t in targets)})")
    else:
        chosen = [targets[0]]
    if need_pid and any(not t.pid for t in chosen):
        raise CachestormError(f"fault {fault!r}: target {chosen[0].name!r} has no known PID")
    return chosen


@dataclass
class TargetProcessFault(Fault):
    """A fault that signals target processes: they are chosen and fingerprinted (PID + start time)
    before anything happens, so a revert never signals a process that merely reused the PID."""

    target: str = ""     # a target name, "*" for all; "": the first

    def check_settings(self) -> None:
        select_targets(self.context.targets, self.target, self.name, need_pid=True)

    def _prepare(self) -> dict:
        chosen = select_targets(self.context.targets, self.target, self.name, need_pid=True)
        return {"processes": [{"name": t.name, "pid": t.pid, "started": start_time(t.pid)} for t in chosen]}
