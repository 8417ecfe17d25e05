"""One proxied TCP connection: two sockets (sides), two links (upstream, downstream).

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
from typing import TYPE_CHECKING, Any

from cachestorm.chaos.proxy import fastpath
from cachestorm.chaos.proxy.link import Link
from cachestorm.chaos.proxy.side import Side
from cachestorm.chaos.proxy.sockets import open_upstream, set_rst_on_close

if TYPE_CHECKING:
    from cachestorm.chaos.proxy.fastpath import FastPath
    from cachestorm.chaos.proxy.proxy import Proxy

RETURN_TRIES = 100  # x 10 ms: how long a connection may take to go quiet before it returns to the engine


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
            self.upstream_unreachable()
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
            upstream = await open_upstream(self.loop, self.proxy.upstream_address())
        except (OSError, ValueError):
            self.upstream_unreachable()
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
                set_rst_on_close(sock)
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

    def upstream_unreachable(self) -> None:
        """The upstream refused or could not be resolved: like Toxiproxy (`client.Close()`), close
        the client's socket cleanly, a FIN it reads as EOF. Toxiproxy never read what the client had
        sent meanwhile, and the kernel answers the close of a socket with unread bytes with RST: so
        does this when the client's bytes arrived. (A native connection's socket was never read:
        the kernel decides alike on its plain close.)"""
        if self.up.pending or (self.client is not None and self.client.nbytes):
            self.reset()
        else:
            self.close()

    def reset(self) -> None:
        """Close both sockets with TCP RST (SO_LINGER 0)."""
        if self.closed:
            return
        self._finish(rst=True)
        for transport in self._transports():
            set_rst_on_close(transport.get_extra_info("socket"))
            transport.abort()
