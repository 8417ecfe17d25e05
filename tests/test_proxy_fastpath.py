"""The native fast path (chaos.proxy._fastpath): the engine on socket pairs, then real Valkey through
the proxy with the engine forwarding (in the kernel and on its epoll thread), switching to Python when
a toxic arrives, and byte counters."""

from __future__ import annotations

import os
import select
import socket
import threading
import time

import pytest
import redis

_fastpath = pytest.importorskip("cachestorm.chaos.proxy._fastpath", reason="native fast path not built (optional extension)")

from cachestorm.chaos.proxy.process import spawn  # noqa: E402
from cachestorm.chaos.toxiproxy import ToxiproxyClient  # noqa: E402

from tests.net_servers import dead_port, how_it_closes, recv_exactly, wait_for  # noqa: E402

# -- the engine alone, on socket pairs ------------------------------------------------------------


@pytest.fixture()
def engine():
    engine = _fastpath.Engine()
    yield engine
    engine.shutdown()


@pytest.fixture()
def wired(engine):
    """client <-> [engine] <-> upstream, with the far ends returned: (pair_id, client, upstream)."""
    client, client_inner = socket.socketpair()
    upstream_inner, upstream = socket.socketpair()
    pair_id = engine.add(client_inner.fileno(), upstream_inner.fileno())
    client_inner.detach()
    upstream_inner.detach()
    yield pair_id, client, upstream
    client.close()
    upstream.close()


def test_engine_forwards_both_ways_and_counts(engine, wired):
    pair_id, client, upstream = wired
    for i in range(200):
        request = f"request {i}\n".encode()
        client.sendall(request)
        assert recv_exactly(upstream, len(request)) == request
        upstream.sendall(request.upper())
        assert recv_exactly(client, len(request)) == request.upper()
    up, down, closed, _ = engine.stats(pair_id)
    assert up == down == sum(len(f"request {i}\n") for i in range(200))
    assert closed is False
    assert engine.live() == 1


def test_engine_half_close_then_completion(engine, wired):
    pair_id, client, upstream = wired
    client.sendall(b"last words")
    client.shutdown(socket.SHUT_WR)
    assert recv_exactly(upstream, 10) == b"last words"
    upstream.settimeout(5)
    assert upstream.recv(10) == b""  # the client's FIN reached the upstream...
    upstream.sendall(b"reply after your EOF")  # ...and the other direction still flows
    assert recv_exactly(client, 20) == b"reply after your EOF"
    assert engine.completed() == []
    upstream.close()
    client.settimeout(5)
    assert client.recv(10) == b""
    readable, _, _ = select.select([engine.completion_fd()], [], [], 5)
    assert readable, "completion fd never became readable"
    assert engine.completed() == [pair_id]
    assert engine.stats(pair_id) == (10, 20, True, 0)  # socketpairs: never in the kernel path
    assert engine.live() == 0


def test_engine_backpressure_then_detach_hands_back_every_byte_in_order(engine, wired):
    pair_id, client, upstream = wired
    payload = os.urandom(8 << 20)
    client.setblocking(False)
    sent = 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the upstream reads nothing: fill until everything blocks
        try:
            sent += client.send(payload[sent : sent + 65536])
        except BlockingIOError:
            time.sleep(0.02)
            try:
                sent += client.send(payload[sent : sent + 65536])
            except BlockingIOError:
                break
    assert 0 < sent < len(payload), "the client was never blocked: no backpressure"
    up_bytes = engine.stats(pair_id)[0]
    assert up_bytes < sent  # the engine stopped reading: the rest waits in the client's socket
    taken = engine.detach(pair_id)
    assert taken is not None
    client_fd, upstream_fd, to_upstream, to_client, up_count, down_count = taken
    assert (up_count, down_count) == (up_bytes, 0) and to_client == b""
    assert engine.stats(pair_id) is None and engine.live() == 0
    inner_client = socket.socket(fileno=client_fd)
    inner_upstream = socket.socket(fileno=upstream_fd)
    try:
        delivered = bytearray()  # what reached the upstream before the detach
        upstream.setblocking(False)
        while True:
            try:
                chunk = upstream.recv(1 << 20)
            except BlockingIOError:
                break
            delivered += chunk
        assert len(delivered) + len(to_upstream) == up_bytes  # read = written + handed back
        inner_client.setblocking(False)
        rest = bytearray()
        while True:
            try:
                rest += inner_client.recv(1 << 20)
            except BlockingIOError:
                break
        assert bytes(delivered) + to_upstream + bytes(rest) == payload[:sent]
        inner_upstream.sendall(b"still yours")  # the handed-back fds are alive
        assert recv_exactly(upstream, 11) == b"still yours"
    finally:
        inner_client.close()
        inner_upstream.close()


def test_engine_close_and_unknown_ids(engine, wired):
    pair_id, client, upstream = wired
    assert engine.detach(999_999) is None and engine.stats(999_999) is None
    engine.close(pair_id)
    client.settimeout(5)
    assert client.recv(1) == b""
    engine.close(pair_id)  # twice is fine
    assert engine.live() == 0


# -- the proxy with real Valkey ----------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sockmap", "epoll"])
def proxy_process(request):
    """Both native modes: in-kernel forwarding where BPF sockmap is available (it falls back to
    the epoll thread where it is not), and the epoll thread alone."""
    sockmap = "1" if request.param == "sockmap" else "0"
    process = spawn(env={"CACHESTORM_PROXY_FASTPATH": "1", "CACHESTORM_PROXY_SOCKMAP": sockmap})
    yield process
    process.stop()


@pytest.fixture()
def api(proxy_api):
    return proxy_api


@pytest.fixture()
def proxy_port(api, valkey):
    upstream = valkey.url.split("//")[1].split("/")[0]
    return int(api.create_proxy("kv", "127.0.0.1:0", upstream)["listen"].rsplit(":", 1)[1])


def stats(api) -> dict:
    return api.get_proxy("kv")["stats"]


def redis_via(port) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, single_connection_client=True)


def test_info_reports_the_fast_path(proxy_process):
    assert ToxiproxyClient(proxy_process.api_url).info()["fastpath"] is True


def test_unreachable_upstream_closes_a_native_connection_with_a_fin(api):
    """The engine never gets a pair whose upstream refused: its client socket is closed plainly,
    as Toxiproxy does (EOF for the client, no RST)."""
    port = int(api.create_proxy("dead", "127.0.0.1:0", f"localhost:{dead_port()}")["listen"].rsplit(":", 1)[1])
    assert [how_it_closes(port) for _ in range(10)] == ["eof"] * 10
    assert api.get_proxy("dead")["stats"]["connections_total"] == 10


def test_many_round_trips_and_big_values(api, proxy_port):
    client = redis_via(proxy_port)
    try:
        for i in range(1500):
            client.set(f"fp:{i}", f"value-{i}")
        assert stats(api)["connections_native"] == 1  # the engine forwards it, not Python
        assert all(client.get(f"fp:{i}") == f"value-{i}".encode() for i in range(1500))
        big = [os.urandom(1 << 20) for _ in range(3)]
        pipe = client.pipeline(transaction=False)
        for i, value in enumerate(big):
            pipe.set(f"fp:big:{i}", value)
        pipe.execute()
        pipe = client.pipeline(transaction=False)
        for i in range(3):
            pipe.get(f"fp:big:{i}")
        assert pipe.execute() == big
    finally:
        client.close()


def test_half_close_reaches_the_upstream(api):
    """The upstream sees the client's EOF while its own answer still gets back to the client."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]

    def answer_after_eof():
        conn, _ = server.accept()
        with conn:
            got = b""
            while chunk := conn.recv(65536):
                got += chunk
            conn.sendall(b"you sent %d bytes" % len(got))

    thread = threading.Thread(target=answer_after_eof, daemon=True)
    thread.start()
    try:
        listen = api.create_proxy("kv", "127.0.0.1:0", f"127.0.0.1:{port}")["listen"]
        with socket.create_connection(("127.0.0.1", int(listen.rsplit(":", 1)[1])), timeout=5) as sock:
            sock.sendall(b"x" * 100_000)
            sock.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        assert reply == b"you sent 100000 bytes"
        thread.join(5)
        assert not thread.is_alive()
    finally:
        server.close()


def test_latency_toxic_moves_live_connection_to_python_and_back(api, proxy_port):
    client = redis_via(proxy_port)
    try:
        client.set("fp:k", "v1")
        assert stats(api)["connections_native"] == 1
        fast = min(_timed(client.get, "fp:k") for _ in range(5))
        api.add_toxic("kv", "latency", {"latency": 120}, name="slow")
        assert stats(api)["connections_native"] == 0  # detached to the Python toxic pipeline
        slow = [_timed(client.get, "fp:k") for _ in range(3)]
        assert all(s >= 0.115 for s in slow), slow
        api.remove_toxic("kv", "slow")
        client.set("fp:k", "v2")
        assert client.get("fp:k") == b"v2"
        assert min(_timed(client.get, "fp:k") for _ in range(5)) < fast + 0.05
        # no toxic left: the quiet connection went back to the engine
        wait_for(lambda: stats(api)["connections_native"] == 1, what="the connection to return to the engine")
        assert all(client.get("fp:k") == b"v2" for _ in range(200))
        fresh = redis_via(proxy_port)  # and new connections are native from the start
        try:
            assert fresh.get("fp:k") == b"v2"
            assert stats(api)["connections_native"] == 2
        finally:
            fresh.close()
    finally:
        client.close()


def _timed(fn, *args) -> float:
    started = time.monotonic()
    fn(*args)
    return time.monotonic() - started


def test_disable_and_delete_drop_native_connections(api, proxy_port):
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=5)
    try:
        sock.sendall(b"PING\r\n")
        assert recv_exactly(sock, 7) == b"+PONG\r\n"
        assert stats(api)["connections_native"] == 1
        api.update_proxy("kv", enabled=False)
        try:
            assert sock.recv(16) == b""
        except ConnectionResetError:
            pass
        assert stats(api)["connections_active"] == 0
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", proxy_port), timeout=2).close()
    finally:
        sock.close()
    api.update_proxy("kv", enabled=True)
    again = socket.create_connection(("127.0.0.1", proxy_port), timeout=5)
    try:
        again.sendall(b"PING\r\n")
        assert recv_exactly(again, 7) == b"+PONG\r\n"
        api.delete_proxy("kv")
        try:
            assert again.recv(16) == b""
        except ConnectionResetError:
            pass
    finally:
        again.close()


def test_byte_counters_match_across_native_python_and_closed(api, proxy_port):
    sent = received = 0
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=5)

    def call(command: bytes, reply_len: int) -> None:
        nonlocal sent, received
        sock.sendall(command)
        sent += len(command)
        received += len(recv_exactly(sock, reply_len))

    try:
        value = b"v" * 1000
        call(b"SET fp:c %b\r\n" % value, 5)  # +OK\r\n
        for _ in range(50):
            call(b"GET fp:c\r\n", 7 + 1000 + 2)  # $1000\r\n...\r\n
        snapshot = stats(api)
        assert snapshot["connections_native"] == 1
        assert (snapshot["bytes_upstream"], snapshot["bytes_downstream"]) == (sent, received)
        api.add_toxic("kv", "noop", {}, name="n")  # now Python carries it, counting on from the engine's totals
        for _ in range(20):
            call(b"GET fp:c\r\n", 1009)
        snapshot = stats(api)
        assert snapshot["connections_native"] == 0
        assert (snapshot["bytes_upstream"], snapshot["bytes_downstream"]) == (sent, received)
        api.remove_toxic("kv", "n")  # back to the engine, counting on from both earlier stretches
        wait_for(lambda: stats(api)["connections_native"] == 1, what="the connection to return to the engine")
        for _ in range(20):
            call(b"GET fp:c\r\n", 1009)
        snapshot = stats(api)
        assert (snapshot["bytes_upstream"], snapshot["bytes_downstream"]) == (sent, received)
    finally:
        sock.close()
    wait_for(lambda: stats(api)["connections_active"] == 0, what="the connection to close")
    snapshot = stats(api)
    assert (snapshot["bytes_upstream"], snapshot["bytes_downstream"]) == (sent, received)
    assert snapshot["connections_total"] == 1


def test_redis_write_fail_on_a_live_native_connection(api, proxy_port, valkey):
    client = redis_via(proxy_port)
    direct = redis.Redis.from_url(valkey.url)
    try:
        client.set("fp:w", "before")
        assert stats(api)["connections_native"] == 1
        api.add_toxic("kv", "redis_write_fail", {"rate": 1.0}, name="wf", stream="upstream")
        with pytest.raises(redis.ResponseError):
            client.set("fp:w", "during")
        assert client.get("fp:w") == b"before"  # reads still pass, replies stay in order
        assert direct.get("fp:w") == b"before"  # the write never reached Valkey
        api.remove_toxic("kv", "wf")
        client.set("fp:w", "after")
        assert direct.get("fp:w") == b"after"
        wait_for(lambda: stats(api)["connections_native"] == 1, what="the connection to return to the engine")
        client.set("fp:w", "native again")
        assert direct.get("fp:w") == b"native again"
    finally:
        client.close()
        direct.close()
