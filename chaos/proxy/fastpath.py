"""The optional native fast path: connections with no toxic are forwarded by `_fastpath.Engine`
(a C epoll thread, no GIL) instead of Python. One engine per event loop, made on first use.

Falls back to the Python path (returns None) when the extension was not built or
CACHESTORM_PROXY_FASTPATH=0. Where BPF sockmap is available (root, Linux >= 5.13) the engine lets
the kernel forward toxic-free pairs (a TCP client, a TCP or Unix-socket upstream) itself (see
_sockmap.h); CACHESTORM_PROXY_SOCKMAP=0 keeps it to its epoll thread. The engine owns a pair's
sockets while it forwards them; a finished pair is reported through its completion eventfd, which
this module watches on the loop.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import TYPE_CHECKING

try:
    from cachestorm.chaos.proxy._fastpath import Engine, kernel_supported, upstream_ready
except ImportError:  # not compiled (optional extension): the Python path does everything
    Engine = kernel_supported = upstream_ready = None

if TYPE_CHECKING:
    from cachestorm.chaos.proxy.connection import Connection

ENV_SWITCH = "CACHESTORM_PROXY_FASTPATH"
SOCKMAP_SWITCH = "CACHESTORM_PROXY_SOCKMAP"
ACCEPT_WAIT_S = 0.02  # how long a new pair waits for a Unix-socket upstream to accept (kernel mode)


def _sockmap_wanted() -> bool:
    return os.environ.get(SOCKMAP_SWITCH, "1") != "0"


def available() -> bool:
    return Engine is not None and os.environ.get(ENV_SWITCH, "1") != "0"


class FastPath:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.engine_kernel = kernel_available()
        self.engine = Engine(kernel=_sockmap_wanted())
        self.connections: dict[int, Connection] = {}
        loop.add_reader(self.engine.completion_fd(), self._on_completed)

    async def upstream_accepted(self, upstream: socket.socket) -> None:
        """In-kernel forwarding of a Unix-socket upstream needs the server to have accepted the
        connection (see _sockmap.h); wait a moment for it without blocking the loop, else the pair
        just stays on the epoll thread."""
        if not self.engine_kernel or upstream.family != socket.AF_UNIX:
            return
        deadline = self.loop.time() + ACCEPT_WAIT_S
        while not upstream_ready(upstream.fileno()) and self.loop.time() < deadline:
            await asyncio.sleep(0.0002)

    def add(self, conn: Connection, client: socket.socket, upstream: socket.socket) -> int:
        """Hand both sockets to the engine (it closes them when the pair ends)."""
        pair_id = self.engine.add(client.fileno(), upstream.fileno())
        client.detach()
        upstream.detach()
        self.connections[pair_id] = conn
        return pair_id

    def pause(self, pair_ids: list[int]) -> None:
        """Stop in-kernel forwarding of these pairs at once (one barrier), before detaching each."""
        self.engine.pause(pair_ids)

    def in_kernel(self, pair_id: int) -> bool:
        """Both directions of the pair are forwarded by the kernel."""
        stats = self.engine.stats(pair_id)
        return bool(stats) and stats[3] == 2

    def detach(self, pair_id: int) -> tuple[socket.socket, socket.socket, bytes, bytes, int, int] | None:
        """Stop forwarding; give back the sockets, the bytes read but not yet written each way and
        the byte counts so far. None if the pair already ended (its completion is on its way)."""
        taken = self.engine.detach(pair_id)
        if taken is None:
            return None
        self.connections.pop(pair_id, None)
        client_fd, upstream_fd, to_upstream, to_client, up_bytes, down_bytes = taken
        return socket.socket(fileno=client_fd), socket.socket(fileno=upstream_fd), to_upstream, to_client, up_bytes, down_bytes

    def close(self, pair_id: int) -> tuple[int, int]:
        """Close the pair's sockets; returns its final byte counts."""
        stats = self.engine.stats(pair_id)
        self.engine.close(pair_id)
        self.connections.pop(pair_id, None)
        return (stats[0], stats[1]) if stats else (0, 0)

    def stats(self, pair_id: int) -> tuple[int, int]:
        stats = self.engine.stats(pair_id)
        return (stats[0], stats[1]) if stats else (0, 0)

    def _on_completed(self) -> None:
        for pair_id in self.engine.completed():
            conn = self.connections.get(pair_id)
            if conn is not None:
                conn.native_ended()
            else:
                self.engine.close(pair_id)

    def shutdown(self) -> None:
        self.loop.remove_reader(self.engine.completion_fd())
        self.engine.shutdown()


_BY_LOOP: dict[asyncio.AbstractEventLoop, FastPath] = {}


def kernel_available() -> bool:
    """Would a new engine forward in the kernel? (Probed once and kept.)"""
    global _KERNEL
    if _KERNEL is None:
        _KERNEL = available() and _sockmap_wanted() and kernel_supported()
    return _KERNEL


_KERNEL: bool | None = None


def for_loop(loop: asyncio.AbstractEventLoop) -> FastPath | None:
    """The loop's engine, or None when the fast path is off or unavailable."""
    if not available():
        return None
    fast = _BY_LOOP.get(loop)
    if fast is None:
        fast = _BY_LOOP[loop] = FastPath(loop)
    return fast


def release(loop: asyncio.AbstractEventLoop) -> None:
    """Stop the loop's engine (when the proxy server closes)."""
    fast = _BY_LOOP.pop(loop, None)
    if fast is not None:
        fast.shutdown()


def pause_pairs(loop: asyncio.AbstractEventLoop, pair_ids: list[int]) -> None:
    """Before a toxic takes these pairs back: stop their in-kernel forwarding with one barrier."""
    fast = _BY_LOOP.get(loop)
    if fast is not None and pair_ids:
        fast.pause(pair_ids)
