"""One proxied TCP connection: two sockets, two links (upstream = client→server, downstream).

Fast path: with no toxic applying to a link, bytes read from one transport are written straight
to the other from `data_received` (no queue, no coroutine) with flow control: when a transport's
write buffer is full, reading from its peer pauses. When a toxic starts applying, the link switches
to a queue + one task that runs each chunk through the toxic chain in order; when the chain is empty
again and the queue drained, it switches back.

Native path (optional, see fastpath.py): a connection accepted while its proxy has no toxic is
forwarded by the C engine and has no transports at all. When a toxic is added, the engine hands the
sockets back with the bytes it had read but not written, and the connection continues here. When
the proxy's last toxic is removed, quiet Python connections are handed (back) to the engine.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct
from collections import deque
from typing import TYPE_CHECKING, Any

from cachestorm.chaos.proxy import fastpath
from cachestorm.chaos.proxy.toxics.base import NOT_NOW

if TYPE_CHECKING:
    from cachestorm.chaos.proxy.fastpath import FastPath
    from cachestorm.chaos.proxy.proxy import Proxy
    from cachestorm.chaos.proxy.toxics.base import Toxic

QUEUE_HIGH = 1 << 20  # pause reading the source when this much waits in the toxic queue
QUEUE_LOW = 1 << 18
RETURN_TRIES = 100  # x 10 ms: how long a connection may take to go quiet before it returns to the engine


class BusyPoll:
    """Optional busy polling while traffic flows: the loop keeps polling with a zero timeout for
    `window` seconds after the last chunk instead of sleeping in epoll. On a small shared box the
    wake-up of a sleeping proxy costs more than the forwarding itself; this trades one core's idle
    time (only while traffic flows) for lower latency. Off unless configured."""

    def __init__(self):
        self.idle = False  # True: enabled and not spinning (the next chunk starts it)
        self.activity = 0
        self.window = 0.0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._seen = 0
        self._until = 0.0

    def configure(self, loop: asyncio.AbstractEventLoop, window_s: float) -> None:
        self.loop, self.window = loop, window_s
        self.idle = window_s > 0

    def wake(self) -> None:
        self.idle = False
        self._until = self.loop.time() + self.window
        self.loop.call_soon(self._spin)

    def _spin(self) -> None:
        now = self.loop.time()
        if self.activity != self._seen:
            self._seen = self.activity
            self._until = now + self.window
        if now < self._until:
            self.loop.call_soon(self._spin)
        else:
            self.idle = True


BUSY_POLL = BusyPoll()


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


class Side(asyncio.Protocol):
    """One socket of a proxied connection. `forward` is rebound by the link for speed."""

    def __init__(self, conn: Connection, out_link: Link, in_link: Link):
        self.conn = conn
        self.out_link = out_link  # carries what this socket reads
        self.in_link = in_link  # carries what this socket is written
        self.transport: asyncio.Transport | None = None
        self.nbytes = 0
        self.forward: Any = out_link.pending.append
        self.retired = False  # its socket went to the native engine: the transport's end means nothing

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.nbytes += len(data)
        self.forward(data)
        poll = BUSY_POLL
        poll.activity += 1
        if poll.idle:
            poll.wake()

    def eof_received(self) -> bool:
        self.out_link.feed_eof()
        return True  # we close both sides ourselves (after slow_close & co.)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.retired or self.conn.closed:
            return
        if self.out_link.slow and not self.out_link.eof_queued:
            self.out_link.feed_eof()
        else:
            self.conn.close()

    def pause_writing(self) -> None:
        self.in_link.sink_paused()

    def resume_writing(self) -> None:
        self.in_link.sink_resumed()


class ClientSide(Side):
    """The accepted socket; creating it starts the connection."""

    def __init__(self, proxy: Proxy):
        conn = Connection(proxy)
        super().__init__(conn, conn.up, conn.down)
        conn.client = self
        conn.prepare()  # at accept: the toxics of that moment, not of when the transport is ready

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        if self.conn.closed:
            transport.abort()  # e.g. the proxy was disabled while the transport was being made
            return
        self.conn.up.source = self
        self.conn.up.update_forward()
        self.conn.begin()


class Connection:
    def __init__(self, proxy: Proxy):
        self.proxy = proxy
        self.loop = proxy.loop
        self.up = Link(self, "upstream")
        self.down = Link(self, "downstream")
        self.client: ClientSide | None = None
        self.server: Side | None = None
        self.closed = False
        self.replies: Any = None  # a Redis reply sequencer while redis_write_fail acts
        self._connect_task: asyncio.Task | None = None
        self._open_timer: asyncio.TimerHandle | None = None
        self._open_delay = 0.0
        # native path
        self.fast: FastPath | None = None
        self.pair_id: int | None = None  # set while the engine forwards this connection
        self.moved_before = (0, 0)  # bytes (up, down) moved by earlier engine/Python stretches
        self.withheld_before = (0, 0)  # bytes (up, down) toxics of earlier Python stretches kept back
        self.python_only = False  # a toxic arrived: never (again) to the engine
        self._raw: list[socket.socket] = []  # sockets owned by neither a transport nor the engine

    def link_for(self, stream: str) -> Link:
        return self.up if stream == "upstream" else self.down

    def prepare(self) -> None:
        """Count the connection and attach the proxy's current toxics (Python path)."""
        self.proxy.connection_opened(self)
        self._open_delay = 0.0
        for toxic in self.proxy.toxic_order():
            if toxic.affects_data:
                self.link_for(toxic.stream).attach(toxic)
            elif random.random() < toxic.toxicity:  # slow_open
                self.proxy.stats.toxic_applied(toxic.type_name)
                self._open_delay += toxic.attrs.get("delay", 0) / 1000.0

    def begin(self) -> None:
        """The client's transport is ready: connect upstream (after slow_open's delay)."""
        if self._open_delay > 0:
            self._open_timer = self.loop.call_later(self._open_delay, self._begin_connect)
        else:
            self._begin_connect()

    def _begin_connect(self) -> None:
        if not self.closed:
            self._connect_task = self.loop.create_task(self._connect())

    async def _connect(self) -> None:
        address = self.proxy.upstream_address()
        server = Side(self, self.down, self.up)
        try:
            if isinstance(address, str):
                transport, _ = await self.loop.create_unix_connection(lambda: server, address)
            else:
                transport, _ = await self.loop.create_connection(lambda: server, *address)
        except (OSError, ValueError):
            self.reset()  # like Toxiproxy: accept, then reset the client
            return
        except asyncio.CancelledError:
            return
        if self.closed:
            transport.abort()
            return
        self.server = server
        server.transport = transport
        self.down.source = server
        self.down.update_forward()
        self.down.set_sink(self.client.transport, self.client.transport.write)
        if self.replies is not None:
            self.down.set_sink_write(self.replies.server_data)
        self.up.set_sink(transport, transport.write)

    # -- native path -----------------------------------------------------------
    def start_native(self, client_sock: socket.socket, fast: FastPath) -> None:
        self.fast = fast
        self._raw.append(client_sock)
        self.proxy.connection_opened(self)
        self._connect_task = self.loop.create_task(self._connect_native(client_sock))

    async def _connect_native(self, client_sock: socket.socket) -> None:
        try:
            upstream = await _open_upstream(self.loop, self.proxy.upstream_address())
        except (OSError, ValueError):
            self.reset()  # like Toxiproxy: accept, then reset the client
            return
        if self.closed:
            upstream.close()
            return
        self._raw.append(upstream)
        await self.fast.upstream_accepted(upstream)
        if self.closed:
            return  # its sockets in _raw were closed with it
        if not self.python_only:
            try:
                self.pair_id = self.fast.add(self, client_sock, upstream)
                self._raw.clear()
                return
            except OSError:
                pass
        await self._adopt(client_sock, upstream, b"", b"")

    def leave_fast_path(self) -> None:
        """A toxic is coming: take the sockets back from the engine and go on in Python."""
        self.python_only = True
        if self.pair_id is None or self.closed:
            return  # still connecting (it will see python_only) or already Python
        taken = self.fast.detach(self.pair_id)
        if taken is None:
            return  # the pair just ended; its completion closes this connection
        self.pair_id = None
        client_sock, upstream, to_upstream, to_client, up_bytes, down_bytes = taken
        self.moved_before = (self.moved_before[0] + up_bytes, self.moved_before[1] + down_bytes)
        self._raw = [client_sock, upstream]
        self._connect_task = self.loop.create_task(self._adopt(client_sock, upstream, to_upstream, to_client))

    async def _adopt(self, client_sock: socket.socket, upstream: socket.socket, to_upstream: bytes, to_client: bytes) -> None:
        """Wrap both sockets in transports and wire them as `_connect` does; bytes the engine had
        read but not written go first, through the toxics now attached."""
        client = Side(self, self.up, self.down)
        server = Side(self, self.down, self.up)
        if to_upstream:
            self.up.pending.append(to_upstream)
        if to_client:
            self.down.pending.append(to_client)
        try:  # each socket belongs to its transport (closed with it) from the call on
            self._raw.remove(client_sock)
            client_transport, _ = await self.loop.connect_accepted_socket(lambda: client, client_sock)
            self.client = client
            self._raw.remove(upstream)
            server_transport, _ = await self.loop.connect_accepted_socket(lambda: server, upstream)
            self.server = server
        except OSError:
            self.abort()
            return
        if self.closed:
            self._abort_transports()
            return
        self.up.source = client
        self.up.update_forward()
        self.down.source = server
        self.down.update_forward()
        self.down.set_sink(client_transport, client_transport.write)
        if self.replies is not None:
            self.down.set_sink_write(self.replies.server_data)
        self.up.set_sink(server_transport, server_transport.write)

    def return_to_fast_path(self, tries: int = RETURN_TRIES) -> None:
        """The proxy has no toxic any more: hand this Python connection to the engine once it is
        quiet (nothing queued, pending or buffered either way); retried briefly while it drains."""
        if self.closed or self.pair_id is not None or self.proxy.toxics:
            return
        fast = fastpath.for_loop(self.loop)
        if fast is None or self.client is None or self.server is None:
            return
        if not self._quiet():
            if tries > 0:
                self.loop.call_later(0.01, self.return_to_fast_path, tries - 1)
            return
        sides = (self.client, self.server)
        try:
            fds = [os.dup(side.transport.get_extra_info("socket").fileno()) for side in sides]
        except (OSError, AttributeError):
            return
        self.moved_before = self.bytes_moved()
        self.withheld_before = self.withheld()
        for side in sides:
            side.retired = True
            side.transport.abort()  # closes the transport's fd; the dup keeps the socket open
        self.client = self.server = None
        self.up, self.down = Link(self, "upstream"), Link(self, "downstream")
        self.fast, self.python_only = fast, False
        client_sock, upstream = socket.socket(fileno=fds[0]), socket.socket(fileno=fds[1])
        try:
            self.pair_id = fast.add(self, client_sock, upstream)
        except OSError:
            client_sock.close()
            upstream.close()
            self._finish()

    def _quiet(self) -> bool:
        for link in (self.up, self.down):
            if link.slow or link.task is not None or link.queue or link.pending or link.paused_for or link.chain:
                return False
        for side in (self.client, self.server):
            transport = side.transport
            if transport is None or transport.is_closing() or transport.get_write_buffer_size():
                return False
        return self.replies is None

    def in_kernel(self) -> bool:
        return self.pair_id is not None and self.fast.in_kernel(self.pair_id)

    def native_ended(self) -> None:
        """The engine saw both directions end (or a socket fail) and closed the sockets."""
        if not self.closed:
            self._finish()

    def bytes_moved(self) -> tuple[int, int]:
        """Bytes read from the client (upstream) and from the server (downstream)."""
        up, down = self.moved_before
        if self.pair_id is not None:
            native_up, native_down = self.fast.stats(self.pair_id)
            return up + native_up, down + native_down
        return (
            up + (self.client.nbytes if self.client else 0),
            down + (self.server.nbytes if self.server else 0),
        )

    def withheld(self) -> tuple[int, int]:
        """Bytes read but not passed on (dropped or still held by toxics), (up, down)."""
        up, down = self.withheld_before
        return up + self.up.fed - self.up.written, down + self.down.fed - self.down.written

    def bytes_sent(self) -> tuple[int, int]:
        """Bytes written to the server (upstream) and to the client (downstream)."""
        (up, down), (held_up, held_down) = self.bytes_moved(), self.withheld()
        return up - held_up, down - held_down

    def ensure_sequencer(self, factory: Any) -> None:
        if self.replies is None:
            self.replies = factory(self)
            self.replies.users = 0
            if self.server is not None:
                self.down.set_sink_write(self.replies.server_data)
        self.replies.users += 1
        self.replies.detached = False

    def release_sequencer(self) -> None:
        replies = self.replies
        if replies is None:
            return
        replies.users -= 1
        if replies.users <= 0:
            replies.detached = True  # keep ordering until injected replies are delivered
            if not replies.queue and not replies.buf:
                self.drop_sequencer()

    def drop_sequencer(self) -> None:
        self.replies = None
        if self.client is not None and self.client.transport is not None and self.server is not None:
            self.down.set_sink_write(self.client.transport.write)

    def _transports(self) -> list[asyncio.Transport]:
        sides = (self.client, self.server)
        return [s.transport for s in sides if s is not None and s.transport is not None]

    def _finish(self, rst: bool = False) -> None:
        if self.pair_id is not None:
            native_up, native_down = self.fast.close(self.pair_id)
            self.moved_before = (self.moved_before[0] + native_up, self.moved_before[1] + native_down)
            self.pair_id = None
        for sock in self._raw:
            if rst:
                _set_rst_on_close(sock)
            sock.close()
        self._raw = []
        self.closed = True
        self.up.stop()
        self.down.stop()
        if self._open_timer is not None:
            self._open_timer.cancel()
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
        self.proxy.connection_closed(self)

    def close(self) -> None:
        """Graceful close of both sockets (pending writes are flushed first)."""
        if self.closed:
            return
        self._finish()
        for transport in self._transports():
            transport.close()

    def abort(self) -> None:
        if self.closed:
            return
        self._finish()
        self._abort_transports()

    def _abort_transports(self) -> None:
        for transport in self._transports():
            transport.abort()

    def reset_when_wired(self) -> None:
        """reset() once a connection being taken back from the native engine has its transports (a
        reset in the middle of `_adopt` would close the client's socket gracefully, without RST)."""
        task = self._connect_task
        if task is not None and not task.done():
            task.add_done_callback(lambda _task: self.reset())
        else:
            self.reset()

    def reset(self) -> None:
        """Close both sockets with TCP RST (SO_LINGER 0)."""
        if self.closed:
            return
        self._finish(rst=True)
        for transport in self._transports():
            _set_rst_on_close(transport.get_extra_info("socket"))
            transport.abort()


def _set_rst_on_close(sock: Any) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except (OSError, AttributeError):
        pass


async def _open_upstream(loop: asyncio.AbstractEventLoop, address: tuple[str, int] | str) -> socket.socket:
    """A connected non-blocking socket to the upstream: a Unix socket path, or TCP (host, port)
    trying each resolved address in turn."""
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except BaseException:
            sock.close()
            raise
        return sock
    host, port = address
    error: OSError = OSError(f"cannot resolve {host}")
    for family, kind, proto, _, address in await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise error
