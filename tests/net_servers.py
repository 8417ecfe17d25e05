"""Small loopback TCP servers the proxy tests send real traffic through, and helpers to read from them."""

from __future__ import annotations

import socket
import threading
import time


class EchoServer:
    """A TCP echo server on a loopback port, in threads."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn):
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                conn.sendall(data)

    def close(self):
        self.sock.close()


def wait_for(condition, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.002)
    raise AssertionError(f"timed out waiting for {what}")


def recv_exactly(sock: socket.socket, n: int, timeout=5.0) -> bytes:
    sock.settimeout(timeout)
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(min(1 << 20, n - len(out)))
        assert chunk, f"EOF after {len(out)} of {n} bytes"
        out += chunk
    return bytes(out)


def dead_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def how_it_closes(port: int, send: bytes = b"", wait: float = 0.0) -> str:
    """Connect to a proxy's port, send `send`, wait, read: "eof" (a FIN), "reset" (a RST) or
    "data"."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            if send:
                sock.sendall(send)
            time.sleep(wait)
            return "data" if sock.recv(100) else "eof"
        except (ConnectionResetError, BrokenPipeError):
            return "reset"
