"""Ctrl-C and SIGTERM as KeyboardInterrupt, remembered.

Python runs a signal handler between any two bytecodes, including inside a `__del__` (redis-py's
ConnectionPool has one), where the KeyboardInterrupt it raises is printed as "Exception ignored"
and lost: the program carries on as if nothing happened. The handler here also records the signal,
so code that must not finish after an interrupt (starting the stack) can check at its end.
"""

from __future__ import annotations

import signal

_seen: list[int] = []


def on_interrupt(signum, frame) -> None:
    _seen.append(signum)
    raise KeyboardInterrupt


def install() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_interrupt)


def raise_if_swallowed() -> None:
    """Raise the KeyboardInterrupt that an interrupt raised somewhere it was ignored."""
    if _seen:
        raise KeyboardInterrupt
