"""Kernel mode of the native engine (BPF sockmap, chaos/proxy/_sockmap.h): toxic-free pairs
forwarded by the kernel, with the upstream over TCP and over a Unix socket (`unix:` upstreams,
which order FINs and hand-overs with a marker instead of TCP's acked bytes). Real Valkey and real
servers through a real proxy process; every test first checks that the connection really is
forwarded in the kernel (GET /proxies `connections_in_kernel`), so none of them can pass on the
epoll path by accident.

Skipped where sockmap is not available (not root, old kernel); CI runs as root on Linux 6.x.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time

import pytest

_fastpath = pytest.importorskip("cachestorm.chaos.proxy._fastpath", reason="native fast path not built (optional extension)")

from cachestorm.chaos.proxy.process import spawn  # noqa: E402
from cachestorm.chaos.toxiproxy import ToxiproxyClient  # noqa: E402

from tests.net_servers import recv_exactly, wait_for  # noqa: E402

if not _fastpath.kernel_supported():
    pytest.skip("BPF sockmap not available here (needs root and Linux >= 5.13)", allow_module_level=True)


@pytest.fixture(params=["tcp", "unix"])
def transport(request) -> str:
    """How the proxy reaches the upstream."""
    return request.param


def valkey_upstream(valkey, transport: str) -> str:
    if transport == "unix":
        return f"unix:{valkey.extra['unix_socket']}"
    return valkey.url.split("//")[1].split("/")[0]


@pytest.fixture(scope="module")
def proxy_process(tmp_path_factory, server_root):
    process = spawn(env={"CACHESTORM_PROXY_FASTPATH": "1", "CACHESTORM_PROXY_SOCKMAP": "1"},
                    allow_unix=[tmp_path_factory.getbasetemp(), server_root])
    yield process
    process.stop()


@pytest.fixture()
def api(proxy_api):
    return proxy_api


def stats(api, name="k") -> dict:
    return api.get_proxy(name)["stats"]


def listen_port(api, upstream: str, name="k") -> int:
    return int(api.create_proxy(name, "127.0.0.1:0", upstream)["listen"].rsplit(":", 1)[1])


class OneShotServer:
    """A one-connection server running `handler(conn)` in a thread, on TCP or a Unix socket."""

    def __init__(self, handler, transport: str = "tcp", tmp_path=None):
        if transport == "unix":
            path = str(tmp_path / "upstream.sock")
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.bind(path)
            self.address = f"unix:{path}"
        else:
            self.sock = socket.socket()
            self.sock.bind(("127.0.0.1", 0))
            self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.sock.listen(8)
        self.results: list = []
        self.thread = threading.Thread(target=self._serve, args=(handler,), daemon=True)
        self.thread.start()

    def _serve(self, handler):
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(10)
            self.results.append(handler(conn))

    def close(self):
        self.thread.join(10)
        self.sock.close()
        assert not self.thread.is_alive(), "the upstream handler did not finish"


def test_version_reports_sockmap(proxy_process):
    assert ToxiproxyClient(proxy_process.api_url).info()["sockmap"] is True


def test_redis_traffic_in_the_kernel_with_exact_byte_counts(api, valkey, transport):
    port = listen_port(api, valkey_upstream(valkey, transport))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"DEL kernel:n\r\n")
        assert recv_exactly(sock, 4) in (b":0\r\n", b":1\r\n")
        sent = len(b"DEL kernel:n\r\n")
        wait_for(lambda: stats(api)["connections_in_kernel"] == 1, what="the pair to be forwarded in the kernel")
        received = 4
        for i in range(1, 2001):
            request = b"INCR kernel:n\r\n"
            sock.sendall(request)
            reply = b":%d\r\n" % i
            assert recv_exactly(sock, len(reply)) == reply
            sent += len(request)
            received += len(reply)
        assert stats(api)["connections_in_kernel"] == 1  # still the kernel after 2,000 round trips
        counted = stats(api)
        assert (counted["bytes_upstream"], counted["bytes_downstream"]) == (sent, received)
    wait_for(lambda: stats(api)["connections_active"] == 0, what="the closed connection to be reaped")
    counted = stats(api)
    assert (counted["bytes_upstream"], counted["bytes_downstream"]) == (sent, received)  # kept after close


def test_bytes_sent_before_the_proxy_accepted_are_forwarded(api, valkey, transport):
    """The client writes right after connect, before the pair enters the sockmap: those bytes are
    neither lost nor stuck until the next write, and the pair still ends up in the kernel."""
    port = listen_port(api, valkey_upstream(valkey, transport))
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"PING\r\nPING\r\n")
            assert recv_exactly(sock, 14) == b"+PONG\r\n+PONG\r\n"
            wait_for(lambda: stats(api)["connections_in_kernel"] >= 1, what="the pair to go to the kernel")
            sock.sendall(b"ECHO after\r\n")
            assert recv_exactly(sock, 11) == b"$5\r\nafter\r\n"


def test_server_that_speaks_first(api, transport, tmp_path):
    """A greeting sent by the upstream as soon as it accepts reaches the client (not dropped while
    the pair is being put in the map), then traffic flows both ways."""

    def greet_then_echo(conn):
        conn.sendall(b"220 hello\r\n")
        data = recv_exactly(conn, 5)
        conn.sendall(data.upper())
        return data

    server = OneShotServer(greet_then_echo, transport, tmp_path)
    port = listen_port(api, server.address)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        assert recv_exactly(sock, 11) == b"220 hello\r\n"
        sock.sendall(b"abcde")
        assert recv_exactly(sock, 5) == b"ABCDE"
    server.close()
    assert server.results == [b"abcde"]


def test_half_close_after_megabytes_keeps_every_byte_before_the_fin(api, transport, tmp_path):
    """4 MB then SHUT_WR: the FIN must reach the upstream only after everything the kernel
    redirected before it (the engine waits for the send queues), and the answer comes back whole."""
    payload = os.urandom(4 << 20)

    def digest_until_eof(conn):
        digest, size = hashlib.sha256(), 0
        while chunk := conn.recv(1 << 20):
            digest.update(chunk)
            size += len(chunk)
        answer = digest.digest() * 1000  # 32 kB back after the client's FIN
        conn.sendall(answer)
        return size, digest.hexdigest()

    server = OneShotServer(digest_until_eof, transport, tmp_path)
    port = listen_port(api, server.address)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"x")
        assert recv_exactly_nothing_yet(sock)
        wait_for(lambda: stats(api)["connections_in_kernel"] == 1, what="the pair to go to the kernel")
        sock.sendall(payload[1:])
        sock.shutdown(socket.SHUT_WR)
        answer = bytearray()
        while chunk := sock.recv(1 << 20):
            answer += chunk
    server.close()
    expected = hashlib.sha256(b"x" + payload[1:])
    assert server.results == [(len(payload), expected.hexdigest())]
    assert bytes(answer) == expected.digest() * 1000


def recv_exactly_nothing_yet(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(1)
    except BlockingIOError:
        return True
    finally:
        sock.setblocking(True)
        sock.settimeout(10)
    return False


def test_toxic_added_and_removed_under_pipelined_traffic_keeps_order(api, valkey, transport):
    """A client keeps 50 ECHOs in flight while a latency toxic is added (the pair leaves the kernel:
    gates closed, in-flight bytes drained) and removed: every reply arrives once, in order."""
    port = listen_port(api, valkey_upstream(valkey, transport))
    total, window = 20000, 50
    errors: list[str] = []

    def client():
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            reader = sock.makefile("rb")
            sent = 0
            for received in range(total):
                while sent < total and sent - received < window:
                    body = b"m%06d" % sent
                    sock.sendall(b"ECHO %s\r\n" % body)
                    sent += 1
                header, body = reader.readline(), reader.readline()
                if header != b"$7\r\n" or body != b"m%06d\r\n" % received:
                    errors.append(f"reply {received}: {header!r} {body!r}")
                    return

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    wait_for(lambda: stats(api)["connections_in_kernel"] == 1, what="the pair to go to the kernel")
    api.add_toxic("k", "latency", {"latency": 2}, name="slow")
    assert thread.is_alive(), "the client finished before the toxic came: nothing was handed over mid-stream"
    assert stats(api)["connections_in_kernel"] == 0
    time.sleep(0.2)  # let traffic run through the toxic for a while (not a readiness wait)
    api.remove_toxic("k", "slow")
    thread.join(30)
    assert not thread.is_alive(), "the client hung"
    assert errors == []


def test_toxic_added_while_the_upstream_is_not_reading_keeps_every_byte_in_order(api, transport, tmp_path):
    """The upstream stops reading while the client streams, so the kernel still holds redirected
    bytes for it (its send queue is full) when a toxic takes the pair over. The hand-over must wait
    until those bytes have left (TCP: acked + queued bytes; Unix socket: the marker) before Python
    writes anything after them: the upstream receives the stream whole and in order. (With a toxic
    on, the client's FIN then closes the connection, as in Toxiproxy, so no answer is awaited.)"""
    payload = os.urandom(12 << 20)
    paused, resume = threading.Event(), threading.Event()

    def stall_then_digest(conn):
        digest, size = hashlib.sha256(), 0
        while size < (1 << 20):
            chunk = conn.recv(1 << 16)
            digest.update(chunk)
            size += len(chunk)
        paused.set()
        resume.wait(10)
        while chunk := conn.recv(1 << 20):
            digest.update(chunk)
            size += len(chunk)
        return size, digest.hexdigest()

    server = OneShotServer(stall_then_digest, transport, tmp_path)
    port = listen_port(api, server.address)
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(payload[:1])
        wait_for(lambda: stats(api)["connections_in_kernel"] == 1, what="the pair to go to the kernel")
        sender = threading.Thread(target=lambda: (sock.sendall(payload[1:]), sock.shutdown(socket.SHUT_WR)), daemon=True)
        sender.start()
        assert paused.wait(10), "the upstream never got its first megabyte"
        time.sleep(0.2)  # let the client fill every buffer on the way while the upstream reads nothing
        threading.Timer(0.3, resume.set).start()  # the upstream reads again while the toxic is being added
        api.add_toxic("k", "latency", {"latency": 1}, name="late")
        assert stats(api)["connections_in_kernel"] == 0
        sender.join(30)
        assert not sender.is_alive(), "the client could not send everything"
        server.thread.join(20)
    server.close()
    assert server.results == [(len(payload), hashlib.sha256(payload).hexdigest())]


def test_unix_upstream_that_accepts_late_still_carries_the_traffic(api, tmp_path):
    """The kernel knows a Unix chunk by its sender, whose socket exists only once the server has
    accepted: a server that accepts 300 ms late leaves the pair on the epoll thread (the proxy
    waits 20 ms for it, without blocking its loop), and every byte still gets through."""
    path = tmp_path / "late.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(4)
    served: list[bytes] = []

    def accept_late():
        time.sleep(0.3)
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5)
            data = recv_exactly(conn, 5)
            served.append(data)
            conn.sendall(data.upper())

    thread = threading.Thread(target=accept_late, daemon=True)
    thread.start()
    port = listen_port(api, f"unix:{path}")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"hello")
        assert recv_exactly(sock, 5) == b"HELLO"
        assert stats(api)["connections_in_kernel"] == 0
    thread.join(5)
    listener.close()
    assert served == [b"hello"]
