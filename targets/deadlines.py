"""Per-call timeouts without a timer per call.

`asyncio.timeout` schedules and cancels a timer handle for every Redis command, about 5% of a
cache hit's CPU. Here one watchdog task wakes every `tick_s` and cancels the calls that are past
their deadline, so a timeout fires between `timeout_s` and `timeout_s + tick_s` after the call began.
A task is only ever in `inflight` while it is suspended in the guarded await (the entry is made just
before it and removed right after), so a cancel always lands on that await and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib


class Deadlines:
    def __init__(self, timeout_s: float, tick_fraction: float = 0.1):
        self.timeout_s = timeout_s
        self.tick_s = max(0.002, timeout_s * tick_fraction)
        self._inflight: dict[asyncio.Task, float] = {}
        self._expired: set[asyncio.Task] = set()
        self._watchdog: asyncio.Task | None = None

    async def run(self, awaitable):
        """Await `awaitable`; raise TimeoutError if it is not done within the timeout."""
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = loop.create_task(self._watch(loop))
        self._inflight[task] = loop.time() + self.timeout_s
        try:
            return await awaitable
        except asyncio.CancelledError:
            if task not in self._expired:
                raise  # somebody else's cancellation: pass it on
            self._expired.discard(task)
            task.uncancel()
            raise TimeoutError(f"no answer within {self.timeout_s:.3f} s") from None
        finally:
            del self._inflight[task]

    async def _watch(self, loop) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            now = loop.time()
            for task, deadline in list(self._inflight.items()):
                if deadline <= now and task not in self._expired:
                    self._expired.add(task)
                    task.cancel()

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
