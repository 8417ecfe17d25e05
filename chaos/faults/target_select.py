"""Choosing target instances for a process fault by name."""

from __future__ import annotations

from cachestorm.errors import CachestormError


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
