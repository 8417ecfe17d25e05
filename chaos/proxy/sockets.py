"""Socket helpers of the proxy's connections: connecting upstream, closing with RST."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any


def set_rst_on_close(sock: Any) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except (OSError, AttributeError):
        pass


async def open_upstream(loop: asyncio.AbstractEventLoop, address: tuple[str, int] | str) -> socket.socket:
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
