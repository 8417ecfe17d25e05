"""Each Toxiproxy toxic with real TCP traffic through cachestorm's proxy, checked with numbers."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.net_servers import dead_port, how_it_closes


class OneShotServer:
    """Accepts, sends `payload`, then closes: to watch how the close travels."""

    def __init__(self, payload: bytes):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.payload = payload
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.sendall(self.payload)
            conn.close()

    def close(self):
        self.sock.close()


@pytest.fixture()
def client(proxy_api):
    return proxy_api


def new_proxy(client, upstream_port, name="t") -> int:
    proxy = client.create_proxy(name, "127.0.0.1:0", f"127.0.0.1:{upstream_port}")
    return int(proxy["listen"].rsplit(":", 1)[1])


def connect(port, timeout=3.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def rtt(sock, payload=b"x" * 16) -> float:
    started = time.monotonic()
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        assert chunk, "connection closed"
        got += chunk
    assert got == payload
    return time.monotonic() - started


def recv_all(sock) -> bytes:
    out = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return out
        out += chunk


def test_latency_added_within_tolerance(client, echo):
    port = new_proxy(client, echo.port)
    with connect(port) as sock:
        base = min(rtt(sock) for _ in range(5))
        client.add_toxic("t", "latency", {"latency": 100})  # applies to the live connection
        slow = [rtt(sock) - base for _ in range(3)]
        # never less than the latency; noise only adds, so the best sample shows the toxic's own delay
        assert all(0.095 <= s <= 0.5 for s in slow) and min(slow) <= 0.16, slow
        client.remove_toxic("t", "latency_downstream")
        assert min(rtt(sock) for _ in range(3)) < 0.05  # back on the fast path


def test_latency_jitter_spreads_delays(client, echo):
    port = new_proxy(client, echo.port)
    client.add_toxic("t", "latency", {"latency": 60, "jitter": 40}, stream="upstream")
    with connect(port) as sock:
        samples = [rtt(sock) for _ in range(12)]
    # 60 +- 40 ms: never below 20 ms; noise only adds, so bound the median tightly and every sample loosely
    assert all(0.015 <= s <= 0.4 for s in samples), samples
    assert sorted(samples)[len(samples) // 2] <= 0.13, samples
    assert max(samples) - min(samples) > 0.015


def test_chunks_keep_their_order_while_a_toxic_waits(client, echo):
    """A chunk arriving while an earlier one waits in a toxic queues behind it (chunks mostly run
    through the chain inline, in data_received; only a waiting one goes to the link's task)."""
    port = new_proxy(client, echo.port)
    client.add_toxic("t", "latency", {"latency": 30, "jitter": 25}, stream="upstream")  # later may be due sooner
    with connect(port) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sent = b""
        for index in range(30):
            piece = f"<{index:02d}>".encode()
            sock.sendall(piece)
            sent += piece
            time.sleep(0.003)
        got = b""
        while len(got) < len(sent):
            chunk = sock.recv(65536)
            assert chunk, f"closed after {got!r}"
            got += chunk
        assert got == sent


def test_toxics_chain_in_order_and_toxicity_zero(client, echo):
    port = new_proxy(client, echo.port)
    client.add_toxic("t", "latency", {"latency": 80}, name="a")
    client.add_toxic("t", "latency", {"latency": 60}, name="b", stream="upstream")
    client.add_toxic("t", "latency", {"latency": 500}, name="never", toxicity=0.0)
    with connect(port) as sock:
        took = rtt(sock)
    assert 0.135 <= took <= 0.45, took  # 80 + 60 ms; the toxicity-0 500 ms toxic would make it > 0.6


def test_bandwidth_near_rate(client):
    payload = b"z" * 200_000
    server = OneShotServer(payload)
    try:
        port = new_proxy(client, server.port)
        client.add_toxic("t", "bandwidth", {"rate": 400})  # 400 KB/s -> 0.5 s for 200 KB
        with connect(port, timeout=5) as sock:
            started = time.monotonic()
            data = recv_all(sock)
            took = time.monotonic() - started
    finally:
        server.close()
    assert data == payload
    rate = len(data) / took / 1000
    assert 200 <= rate <= 450, f"{rate:.0f} KB/s"  # never faster than the toxic; a busy box may be slower


def test_slow_close_delays_the_close(client):
    server = OneShotServer(b"bye")
    try:
        port = new_proxy(client, server.port)
        client.add_toxic("t", "slow_close", {"delay": 300})
        with connect(port) as sock:
            started = time.monotonic()
            assert recv_all(sock) == b"bye"
            took = time.monotonic() - started
    finally:
        server.close()
    assert 0.29 <= took <= 0.6, took


def test_timeout_closes_after_timeout_without_data(client, echo):
    port = new_proxy(client, echo.port)
    client.add_toxic("t", "timeout", {"timeout": 200})
    with connect(port) as sock:
        started = time.monotonic()
        sock.sendall(b"hello")
        assert recv_all(sock) == b""  # nothing passes, then closed
        took = time.monotonic() - started
    assert 0.19 <= took <= 0.5, took


def test_timeout_zero_is_a_blackhole_until_removed(client, echo):
    port = new_proxy(client, echo.port)
    client.add_toxic("t", "timeout", {"timeout": 0}, stream="upstream")
    with connect(port, timeout=0.4) as sock:
        sock.sendall(b"hello")
        with pytest.raises(TimeoutError):
            sock.recv(10)
        sock.settimeout(3)
        client.remove_toxic("t", "timeout_upstream")  # like Toxiproxy: held connections are closed
        assert recv_all(sock) == b""


def test_reset_peer_resets_the_client(client, echo):
    port = new_proxy(client, echo.port)
    client.add_toxic("t", "reset_peer", {"timeout": 100}, stream="upstream")
    with connect(port) as sock:
        started = time.monotonic()
        sock.sendall(b"hello")
        with pytest.raises(ConnectionResetError):
            sock.recv(10)
        took = time.monotonic() - started
    assert 0.09 <= took <= 0.5, took


def test_slicer_splits_into_small_pieces(client):
    payload = bytes(range(256)) * 4  # 1024 bytes
    server = OneShotServer(payload)
    try:
        port = new_proxy(client, server.port)
        client.add_toxic("t", "slicer", {"average_size": 64, "size_variation": 16, "delay": 3000})
        with connect(port) as sock:
            pieces = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                pieces.append(chunk)
    finally:
        server.close()
    assert b"".join(pieces) == payload
    assert len(pieces) >= 8, [len(p) for p in pieces]
    assert max(len(p) for p in pieces) <= 2 * 80


def test_limit_data_cuts_at_the_limit(client, echo):
    port = new_proxy(client, echo.port)
    client.add_toxic("t", "limit_data", {"bytes": 1000})
    with connect(port) as sock:
        sock.sendall(b"q" * 5000)
        data = recv_all(sock)
    assert len(data) == 1000


def test_noop_passes_everything(client, echo):
    port = new_proxy(client, echo.port)
    client.add_toxic("t", "noop", {})
    with connect(port) as sock:
        sock.sendall(b"n" * 100_000)
        got = b""
        while len(got) < 100_000:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(got)} bytes"
            got += chunk
    assert got == b"n" * 100_000


def test_disable_drops_live_connections(client, echo):
    port = new_proxy(client, echo.port)
    with connect(port) as sock:
        rtt(sock)
        client.update_proxy("t", enabled=False)
        try:
            assert sock.recv(10) == b""
        except ConnectionResetError:
            pass


def test_slow_open_delays_new_connections(client, echo):
    port = new_proxy(client, echo.port)
    with connect(port) as early:
        client.add_toxic("t", "slow_open", {"delay": 250})
        assert rtt(early) < 0.2  # only new connections are affected (they wait 250 ms)
        with connect(port) as sock:
            took = rtt(sock)
    assert 0.24 <= took <= 0.5, took


@pytest.mark.parametrize("then_latency", [False, True])
def test_bytes_and_fin_sent_before_the_upstream_connects_are_delivered(client, then_latency):
    """slow_open keeps the upstream unconnected while the client writes 200 kB and closes: the
    upstream still gets every byte, then the EOF (the Python path used to drop them at the EOF)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    received: list[int] = []

    def count_to_eof():
        conn, _ = server.accept()
        with conn:
            conn.settimeout(5)
            received.append(len(recv_all(conn)))

    thread = threading.Thread(target=count_to_eof, daemon=True)
    thread.start()
    port = new_proxy(client, server.getsockname()[1])
    client.add_toxic("t", "slow_open", {"delay": 200})
    if then_latency:  # the bytes then also wait in a toxic's queue
        client.add_toxic("t", "latency", {"latency": 20}, stream="upstream")
    with connect(port) as sock:
        sock.sendall(b"z" * 200_000)
        sock.shutdown(socket.SHUT_WR)
        thread.join(5)
    server.close()
    assert received == [200_000]


def test_unreachable_upstream_on_the_python_path_closes_like_toxiproxy(client):
    """A toxic at accept keeps the connection in Python. Nobody at the upstream: a FIN when the
    client sent nothing; a RST when its bytes had arrived (what the kernel does to Toxiproxy's
    close of a socket with unread bytes), here made certain by slow_open's wait."""
    port = new_proxy(client, dead_port())
    client.add_toxic("t", "noop", {})
    assert [how_it_closes(port) for _ in range(5)] == ["eof"] * 5
    client.add_toxic("t", "slow_open", {"delay": 150})
    assert how_it_closes(port) == "eof"
    assert how_it_closes(port, send=b"PING\r\n", wait=0.3) == "reset"


def test_duration_removes_the_toxic_by_itself(client, echo):
    port = new_proxy(client, echo.port)
    client.add_toxic("t", "latency", {"latency": 100, "duration": 300})
    with connect(port) as sock:
        assert rtt(sock) >= 0.095
        deadline = time.monotonic() + 3
        while client.toxics("t") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.toxics("t") == []
        assert min(rtt(sock) for _ in range(3)) < 0.05


def test_toxic_changes_under_traffic_never_hang_the_api(client, echo):
    port = new_proxy(client, echo.port)
    stop = threading.Event()
    errors: list[Exception] = []
    moved = [0]

    def traffic():
        try:
            with connect(port, timeout=5) as sock:
                while not stop.is_set():
                    rtt(sock, b"y" * 4096)
                    moved[0] += 1
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=traffic) for _ in range(4)]
    for thread in threads:
        thread.start()
    worst = 0.0
    try:
        for round_number in range(15):
            started = time.monotonic()
            client.add_toxic("t", "latency", {"latency": 5}, name=f"l{round_number}")
            client.add_toxic("t", "slicer", {"average_size": 512, "delay": 10}, name=f"s{round_number}")
            client.remove_toxic("t", f"l{round_number}")
            client.remove_toxic("t", f"s{round_number}")
            worst = max(worst, time.monotonic() - started)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert not errors, errors
    assert moved[0] > 20
    assert worst < 1.0, worst
