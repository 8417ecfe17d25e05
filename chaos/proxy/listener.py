"""A proxy's listening socket, accepting on the event loop and handing each raw socket over.

Not `loop.create_server`: that wraps every connection in a transport, and a connection that goes
to the native fast path must not have one (the engine reads the socket itself).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

ACCEPTS_PER_WAKEUP = 64


def open_listener(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """Bind like create_server(reuse_address=True): first address of host, IPv6 only on IPv6."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Listener:
    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, on_accept: Callable[[socket.socket], None]):
        self.loop = loop
        self.sock = sock
        self.on_accept = on_accept
        self.closed = False
        loop.add_reader(sock.fileno(), self._ready)

    def address(self) -> tuple:
        return self.sock.getsockname()

    def _ready(self) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. EMFILE, ECONNABORTED: try again on the next wake-up
                return
            conn.setblocking(False)
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.on_accept(conn)
            if self.closed:
                return

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
