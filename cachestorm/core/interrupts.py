"""Ctrl-C, SIGTERM and SIGHUP as KeyboardInterrupt, remembered; clean-up shielded from the next ones.

Python runs a signal handler between any two bytecodes, including inside a `__del__` (redis-py's
ConnectionPool has one), where the KeyboardInterrupt it raises is printed as "Exception ignored"
and lost: the program carries on as if nothing happened. The handler here also records the signal,
so code that must not finish after an interrupt (starting the stack) can check at its end.

Clean-up must not be cut short by a second signal (a CI runner sends SIGTERM twice, a user presses
Ctrl-C again): inside `armed()` (a run, a matrix, a capacity sweep) the first signal raises
KeyboardInterrupt and raises the shield with it, so every later one is only held, never raised;
`shielded()` raises it explicitly for clean-up that starts without a signal (a failed run), and a
signal held there is the caller's to honour at the end (`held()`). The shield drops when the
outermost `armed()` ends; a caller that was interrupted ends the program right after.
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_seen: list[int] = []
_held: list[int] = []     # signals that arrived while shielded (not raised)
_armed = 0                # depth of armed() regions
_shields = 0              # depth of shielded() regions
_raised = False           # the armed region's first signal was raised: the shield is up until it ends
_notes: list[str] = []    # what an interrupted command wants said on its `interrupted:` line


def on_interrupt(signum, frame) -> None:
    global _raised
    _seen.append(signum)
    if _shields or (_armed and (_raised or _held)):
        _held.append(signum)
        return
    if _armed:
        _raised = True
    raise KeyboardInterrupt


_installed: list[bool] = []  # install() ran: this process is the CLI's (not a test's)


def install() -> None:
    for signum in SIGNALS:
        signal.signal(signum, on_interrupt)
    _installed.append(True)
    previous_hook = sys.unraisablehook

    def quiet_interrupts(unraisable) -> None:  # a KeyboardInterrupt lost in a `__del__`: no traceback
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):  # (check()/raise_if_swallowed raise it again)
            previous_hook(unraisable)

    sys.unraisablehook = quiet_interrupts


def caused_by_interrupt(exc: BaseException | None) -> bool:
    """Whether `exc` wraps a KeyboardInterrupt (an import interrupted inside `__set_name__` is a RuntimeError)."""
    depth = 0
    while exc is not None and depth < 20:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc, depth = exc.__cause__ or exc.__context__, depth + 1
    return False


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def armed():
    """While active, the first signal raises KeyboardInterrupt and every later one is held: the
    except/finally that handles the first one runs to its end. Installs the handler if it is not
    (a library caller); restores the previous handlers at the outermost end."""
    global _armed, _raised
    previous = {}
    if _armed == 0 and _main_thread():  # (held signals are a new region's to ignore: forget them)
        del _held[:]
        for signum in SIGNALS:
            if signal.getsignal(signum) is not on_interrupt:
                previous[signum] = signal.signal(signum, on_interrupt)
    _armed += 1
    try:
        yield
    finally:
        _armed -= 1
        if _armed == 0:
            _raised = False
            for signum, handler in previous.items():
                signal.signal(signum, handler)


@contextmanager
def shielded():
    """No signal raises in here (they are held: `held()`). For clean-up that began without one."""
    global _shields
    _shields += 1
    try:
        yield
    finally:
        _shields -= 1


def held() -> list[int]:
    """Signals that arrived while shielded (the caller decides: e.g. mark the run interrupted)."""
    return list(_held)


def interrupted() -> bool:
    """A signal raised (or was held) in the current armed region: the body must not carry on."""
    return bool(_armed and (_raised or _held))


def check() -> None:
    """In a body that carries on after a KeyboardInterrupt was swallowed (a `__del__`): raise it again."""
    if _armed and not _shields and (_raised or _held):
        raise KeyboardInterrupt


def seen() -> bool:
    return bool(_seen)


def note(text: str) -> None:
    _notes.append(text)


def notes() -> list[str]:
    return list(_notes)


def ignore_from_now() -> None:
    """The program is ending: a late signal must not kill it and change its exit code (Python restores
    the default action of handled signals at exit, not of ignored ones)."""
    if _installed and _main_thread():
        for signum in SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


def raise_if_swallowed() -> None:
    """Raise the KeyboardInterrupt that an interrupt raised somewhere it was ignored."""
    if _seen:
        raise KeyboardInterrupt
