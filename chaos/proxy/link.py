"""One direction of a proxied connection (upstream = client→server, downstream = server→client).

Fast path: with no toxic applying to a link, bytes read from one transport are written straight
to the other from `data_received` (no queue, no coroutine) with flow control: when a transport's
write buffer is full, reading from its peer pauses. When a toxic starts applying, the link switches
to a queue + one task that runs each chunk through the toxic chain in order; when the chain is empty
again and the queue drained, it switches back.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

from cachestorm.chaos.proxy.toxics.base import NOT_NOW

if TYPE_CHECKING:
    from cachestorm.chaos.proxy.connection import Connection
    from cachestorm.chaos.proxy.side import Side
    from cachestorm.chaos.proxy.toxics.base import Toxic

QUEUE_HIGH = 1 << 20  # pause reading the source when this much waits in the toxic queue
QUEUE_LOW = 1 << 18


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class Link:
    """One direction of a connection."""

    def __init__(self, conn: Connection, stream: str):
        self.conn = conn
        self.stream = stream
        self.loop = conn.loop
        self.source: Side | None = None  # protocol we read from
        self.sink_transport: asyncio.Transport | None = None
        self.sink_write: Any = None  # callable(bytes) writing to the far end
        self.pending: list[bytes] = []  # read before the sink was connected
        self.entries: dict[Toxic, tuple[Any, bool]] = {}  # toxic -> (state, applies)
        self.chain: tuple[tuple[Toxic, Any], ...] = ()
        self.slow = False
        self.queue: deque = deque()
        self.queued = 0
        self.fed = 0  # bytes into the toxic queue, and written out of it: the difference is withheld
        self.written = 0
        self.task: asyncio.Task | None = None
        self.wakeup: asyncio.Future | None = None
        self.suspended: tuple[Any, Any] | None = None  # a chunk's chain begun inline, now waiting
        self.sink_blocked: asyncio.Future | None = None
        self.paused_for: set[str] = set()
        self.arrival = 0.0  # arrival time of the chunk being processed
        self.sleeping: tuple[Toxic, asyncio.Future] | None = None
        self.eof_queued = False

    # -- wiring ------------------------------------------------------------
    def now(self) -> float:
        return self.loop.time()

    def update_forward(self) -> None:
        if self.source is None:
            return
        if self.sink_write is None:
            self.source.forward = self.pending.append
        elif self.slow:
            self.source.forward = self.feed
        else:
            self.source.forward = self.sink_write

    def set_sink(self, transport: asyncio.Transport, write: Any) -> None:
        self.sink_transport = transport
        self.sink_write = write
        pending, self.pending = self.pending, []
        for data in pending:
            self.feed(data) if self.slow else write(data)
        self.update_forward()
        if self.eof_queued:
            self._pass_eof()  # the source ended before the sink was connected

    def set_sink_write(self, write: Any) -> None:
        """Swap the final writer (e.g. insert a Redis reply sequencer)."""
        self.sink_write = write
        self.update_forward()

    # -- flow control --------------------------------------------------------
    def pause_source(self, reason: str) -> None:
        if not self.paused_for and self.source is not None and self.source.transport is not None:
            try:
                self.source.transport.pause_reading()
            except (RuntimeError, AttributeError):
                pass
        self.paused_for.add(reason)

    def resume_source(self, reason: str) -> None:
        if reason not in self.paused_for:
            return
        self.paused_for.discard(reason)
        if not self.paused_for and self.source is not None and self.source.transport is not None:
            try:
                self.source.transport.resume_reading()
            except (RuntimeError, AttributeError):
                pass

    def sink_paused(self) -> None:
        self.pause_source("sink")
        if self.sink_blocked is None:
            self.sink_blocked = self.loop.create_future()

    def sink_resumed(self) -> None:
        self.resume_source("sink")
        if self.sink_blocked is not None:
            _wake(self.sink_blocked)
            self.sink_blocked = None

    # -- toxics --------------------------------------------------------------
    def attach(self, toxic: Toxic) -> None:
        state = toxic.new_state()
        applies = toxic.applies_to_link()
        self.entries[toxic] = (state, applies)
        if applies:
            self.conn.proxy.stats.toxic_applied(toxic.type_name)
            toxic.attach(self, state)
        self.rebuild()

    def detach(self, toxic: Toxic) -> None:
        entry = self.entries.pop(toxic, None)
        if entry is None:
            return
        state, applies = entry
        if applies:
            if self.sleeping is not None and self.sleeping[0] is toxic:
                _wake(self.sleeping[1])
            toxic.detach(self, state)
        self.rebuild()

    def redraw(self, toxic: Toxic) -> None:
        entry = self.entries.get(toxic)
        if entry is None:
            return
        applies_now = toxic.applies_to_link()
        if applies_now != entry[1]:
            self.detach(toxic)
            self.entries[toxic] = (toxic.new_state(), applies_now)
            if applies_now:
                self.conn.proxy.stats.toxic_applied(toxic.type_name)
                toxic.attach(self, self.entries[toxic][0])
            self.rebuild()

    def rebuild(self) -> None:
        order = self.conn.proxy.toxic_order()
        chain = [(t, self.entries[t][0]) for t in order if t in self.entries and self.entries[t][1]]
        self.chain = tuple(chain)
        if self.chain and not self.slow:
            self.slow = True
            self.update_forward()
        elif not self.chain and self.slow and self.task is None and not self.queue and self.suspended is None:
            self.slow = False
            self.update_forward()
        elif self.task is not None and self.wakeup is not None:
            _wake(self.wakeup)  # let an idle task notice it can return to the fast path

    # -- slow path -----------------------------------------------------------
    def feed(self, data: bytes) -> None:
        if not self.queue and self.suspended is None and self.sink_blocked is None and not self.conn.closed and (
            self.task is None or self.wakeup is not None  # no task, or one idle: nothing is in flight
        ):
            self._process_inline(data)
            return
        self.queue.append((self.loop.time(), data))
        self.queued += len(data)
        self.fed += len(data)
        if self.queued > QUEUE_HIGH:
            self.pause_source("queue")
        self._kick()

    def requeue_front(self, data: bytes) -> None:
        self.queue.appendleft((self.loop.time(), data))
        self.queued += len(data)
        if not self.slow:
            self.slow = True
            self.update_forward()
        self._kick()

    def feed_eof(self) -> None:
        if self.eof_queued:
            return
        self.eof_queued = True
        if self.sink_write is not None:
            self._pass_eof()
        # else: what the source sent before its EOF still waits for the sink (set_sink passes it on)

    def _pass_eof(self) -> None:
        """Like Toxiproxy: once what came before the EOF is written, close the connection."""
        if not self.slow:
            self.conn.close()
            return
        self.queue.append((self.loop.time(), None))
        self._kick()

    def _process_inline(self, data: bytes) -> None:
        """Run the chunk through the chain now, in data_received: most chunks need no waiting (a
        latency already due, a noop), and a task switch per chunk was most of the toxic path's cost.
        If a toxic does wait, the link's task goes on with the chunk from there, before any other."""
        self.fed += len(data)
        self.arrival = self.loop.time()
        chain = self.chain
        index = 0
        for toxic, state in chain:  # the plain-call prefix: no coroutine while no toxic must wait
            passed = toxic.process_now(self, state, data)
            if passed is NOT_NOW:
                break
            data = passed
            index += 1
        else:
            if data:
                self.written += len(data)
                self.sink_write(data)
            return
        chain_run = self._emit(chain, index, data)
        try:
            waiting = chain_run.send(None)
        except StopIteration:
            return
        self.suspended = (chain_run, waiting)
        self._kick()

    async def _finish_inline(self, chain_run: Any, waiting: Any) -> None:
        """Drive a chain run that began inline: wait for what it waits on, resume it, until done."""
        try:
            while True:
                if waiting is None:  # a bare yield: give the loop one turn
                    await asyncio.sleep(0)
                else:
                    waiting._asyncio_future_blocking = False  # what a Task does with a yielded future
                    try:
                        await waiting
                    except BaseException:
                        if not waiting.done():  # this task is being cancelled
                            chain_run.close()
                            raise
                        # else the outcome is the run's: it sees it when resumed
                try:
                    waiting = chain_run.send(None)
                except StopIteration:
                    return
        finally:
            self.suspended = None

    def _kick(self) -> None:
        if self.task is None:
            self.task = self.loop.create_task(self._run())
        elif self.wakeup is not None:
            _wake(self.wakeup)

    async def _run(self) -> None:
        try:
            while not self.conn.closed:
                if self.suspended is not None:
                    await self._finish_inline(*self.suspended)
                    continue
                if not self.queue:
                    if not self.chain:
                        self.slow = False
                        self.update_forward()
                        return
                    self.wakeup = self.loop.create_future()
                    await self.wakeup
                    self.wakeup = None
                    continue
                arrival, data = self.queue.popleft()
                if data is None:
                    for toxic, state in self.chain:
                        await toxic.on_eof(self, state)
                    self.conn.close()
                    return
                self.queued -= len(data)
                if self.queued < QUEUE_LOW:
                    self.resume_source("queue")
                self.arrival = arrival
                await self._emit(self.chain, 0, data)
        except asyncio.CancelledError:
            pass
        finally:
            self.task = None

    async def _emit(self, chain: tuple, index: int, data: bytes) -> None:
        if index == len(chain):
            await self._write(data)
            return
        toxic, state = chain[index]

        async def emit(chunk: bytes) -> None:
            await self._emit(chain, index + 1, chunk)

        await toxic.process(self, state, data, emit)

    async def _write(self, data: bytes) -> None:
        while self.sink_blocked is not None and not self.conn.closed:
            await self.sink_blocked
        if not self.conn.closed and data:
            self.written += len(data)
            self.sink_write(data)

    async def sleep_until(self, when: float, toxic: Toxic) -> None:
        """Sleep until loop time `when`; cut short if `toxic` is removed from this link."""
        if when <= self.loop.time():
            return
        future = self.loop.create_future()
        handle = self.loop.call_at(when, _wake, future)
        self.sleeping = (toxic, future)
        try:
            await future
        finally:
            handle.cancel()
            self.sleeping = None

    def stop(self) -> None:
        for state, applies in list(self.entries.values()):
            if applies and hasattr(state, "timer") and state.timer is not None:
                state.timer.cancel()
        if self.task is not None:
            self.task.cancel()
        elif self.suspended is not None:
            self.suspended[0].close()
            self.suspended = None
