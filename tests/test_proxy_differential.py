"""Our proxy and the real Toxiproxy side by side: the same API calls and the same traffic to both,
comparing statuses, JSON bodies, headers and timings. Normalised only where Toxiproxy's docs leave
room: the ports each bound, its stray "Logger" field and our "stats" extra, the version string.
Differences we keep on purpose (safety) are tested at the end, both sides shown.

The real server: ../shared/toxiproxy/toxiproxy-server beside the repository, or
CACHESTORM_TOXIPROXY_SERVER; without it this module is skipped, saying so.
"""

from __future__ import annotations

import json
import re
import socket
import time

import httpx
import pytest
from cachestorm.chaos import toxiproxy_server
from cachestorm.chaos.proxy.proxy import MAX_NAME_BYTES

from tests.net_servers import dead_port, how_it_closes, recv_exactly, wait_for

BINARY = toxiproxy_server.find_binary()
pytestmark = pytest.mark.skipif(BINARY is None, reason=toxiproxy_server.missing_reason())
REQUEST_ID = re.compile(r"^[0-9a-v]{20}$")  # rs/xid: 12 bytes, lowercase base32hex
IGNORED_HEADERS = {"date", "x-toxiproxy-request-id", "content-length", "content-encoding"}


@pytest.fixture(scope="module")
def real_server():
    server = toxiproxy_server.start(BINARY)
    yield server
    server.stop()


class Pair:
    """One HTTP client per server; `call` sends the same request to both."""

    def __init__(self, real_url: str, ours_url: str):
        headers = {"User-Agent": "cachestorm-differential", "Accept-Encoding": "identity"}
        self.real = httpx.Client(base_url=real_url, headers=headers, timeout=10, trust_env=False)
        self.ours = httpx.Client(base_url=ours_url, headers=headers, timeout=10, trust_env=False)

    def clean(self) -> None:
        for client in (self.real, self.ours):
            client.post("/reset")
            for name in client.get("/proxies").json():
                client.delete(f"/proxies/{_quote(name)}")

    def call(self, method: str, path: str, body=None, content: bytes | None = None, headers=None):
        kwargs = {"content": content} if content is not None else ({"json": body} if body is not None else {})
        return tuple(c.request(method, path, headers=headers, **kwargs) for c in (self.real, self.ours))

    def same(self, method: str, path: str, body=None, content: bytes | None = None, headers=None):
        """Call both and assert they answered alike; returns (real, ours)."""
        real, ours = self.call(method, path, body, content, headers)
        where = f"{method} {path} {content if content is not None else json.dumps(body)}"
        assert (ours.status_code, normalised(ours)) == (real.status_code, normalised(real)), where
        if not re.search(rb'"(Logger|stats)":', real.content + ours.content):  # then byte for byte too
            assert masked(ours.text) == masked(real.text), where
        assert header_shape(ours) == header_shape(real), where
        return real, ours


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


def normalised(response: httpx.Response):
    """The body as JSON (else text), with what may differ between two servers masked."""
    try:
        value = response.json()
    except ValueError:
        return response.text

    def clean(item):
        if isinstance(item, dict):
            return {k: clean(v) for k, v in item.items() if k not in ("Logger", "stats")}
        if isinstance(item, list):
            return [clean(v) for v in item]
        return masked(item) if isinstance(item, str) else item

    if isinstance(value, dict) and set(value) == {"version"}:
        return {"version": "<version>"}
    return clean(value)


def masked(text: str) -> str:
    """Ports each server bound, and its version string, masked."""
    text = re.sub(r"(127\.0\.0\.1|\[::\]|localhost):\d+", r"\1:<port>", text)
    return re.sub(r'^\{"version": "[^"]*"\}\n$', '{"version": "<version>"}\n', text)


def header_shape(response: httpx.Response) -> dict:
    """Header names and values, except per-response ones; whether a request id came, well formed."""
    shape = {k.lower(): v for k, v in response.headers.items() if k.lower() not in IGNORED_HEADERS}
    request_id = response.headers.get("x-toxiproxy-request-id")
    shape["request id"] = None if request_id is None else bool(REQUEST_ID.match(request_id))
    shape["date"] = "date" in response.headers
    return shape


@pytest.fixture()
def pair(real_server, proxy_process):
    both = Pair(real_server.api_url, proxy_process.api_url)
    both.clean()
    yield both
    both.clean()
    both.real.close()
    both.ours.close()


def port_of(proxy: dict) -> int:
    return int(proxy["listen"].rsplit(":", 1)[1])


def create_both(pair: Pair, echo, name="p", **extra) -> tuple[dict, dict]:
    real, ours = pair.same("POST", "/proxies", {"name": name, "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{echo.port}", **extra})
    return real.json(), ours.json()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def echo_time(sock: socket.socket, payload: bytes = b"ping") -> float:
    started = time.monotonic()
    sock.sendall(payload)
    assert recv_exactly(sock, len(payload)) == payload
    return time.monotonic() - started


# -- the API, call by call ------------------------------------------------------------------------
def test_routes_errors_and_headers_match(pair, echo):
    upstream = f"127.0.0.1:{echo.port}"
    pair.same("GET", "/version")
    pair.same("GET", "/nope")
    pair.same("PUT", "/proxies")  # 405: no Content-Type, no request id
    pair.same("GET", "/proxies", headers={"User-Agent": "Mozilla/5.0"})  # routed: 403 with a request id
    pair.same("GET", "/nope", headers={"User-Agent": "Mozilla/5.0"})  # not routed: 404
    pair.same("POST", "/proxies", content=b"")
    pair.same("POST", "/proxies", content=b"{bad")
    pair.same("POST", "/proxies", content=b'{"name": "q"')
    pair.same("POST", "/proxies", content=b'{"a" 1}')
    pair.same("POST", "/proxies", content=b"[1, 2 3]")
    pair.same("POST", "/proxies", [1])
    pair.same("POST", "/proxies", {"name": 5, "upstream": upstream})
    pair.same("POST", "/proxies", {"name": "e", "enabled": "yes", "upstream": upstream})
    pair.same("POST", "/proxies", {"name": "bad", "listen": "127.0.0.1:99999", "upstream": upstream})
    pair.same("POST", "/proxies", {"name": "bad", "listen": "0", "upstream": upstream})
    pair.same("GET", "/proxies/bad")
    pair.same("POST", "/proxies", {"name": "p x", "listen": "127.0.0.1:0", "upstream": upstream})
    pair.same("GET", "/proxies/p%20x")
    pair.same("POST", "/proxies", {"name": "a<b&c", "listen": "127.0.0.1:0", "upstream": upstream, "enabled": False})
    pair.same("POST", "/proxies", {"name": "é", "listen": "127.0.0.1:0", "upstream": upstream, "enabled": False})
    pair.same("GET", "/proxies")


def test_toxic_calls_match(pair, echo):
    create_both(pair, echo, "p x")
    toxics = "/proxies/p%20x/toxics"
    pair.same("POST", toxics, {"type": "latency", "stream": None, "toxicity": None, "attributes": {"latency": 5}})
    pair.same("POST", toxics, {"type": "latency", "name": "n", "stream": None, "attributes": None})
    pair.same("POST", toxics, {"type": "noop", "stream": "UpStream"})  # shown, and named, as sent
    for value in ("100.0", "1e2", "1.5", '"x"', "[1]"):
        pair.same("POST", toxics, content=f'{{"type": "latency", "name": "i", "attributes": {{"latency": {value}}}}}'.encode())
    pair.same("POST", toxics, {"type": "latency", "name": "l", "attributes": [1]})
    pair.same("POST", toxics, {"type": "latency", "name": "l", "toxicity": "x"})
    pair.same("POST", toxics, {"type": 5})
    pair.same("POST", toxics, {"type": "latency", "name": 5, "stream": 3})
    pair.same("POST", toxics, {"type": "nope", "stream": "x"})
    pair.same("POST", toxics, {"type": "nope", "name": "n"})
    pair.same("POST", toxics, {"type": "latency", "name": "n", "attributes": {"latency": "x"}})  # 409 first
    pair.same("POST", toxics, content=b'{"type": "noop", "name": "z"} trailing junk')
    pair.same("POST", toxics, {"type": "bandwidth", "name": "b", "stream": "upstream", "attributes": {"rate": 10}})
    pair.same("POST", toxics, {"type": "slicer", "name": "s", "stream": "upstream", "toxicity": 0.5,
                               "attributes": {"average_size": 8, "size_variation": 2, "delay": 10}})  # fmt: skip
    pair.same("GET", toxics)  # upstream ones first
    pair.same("GET", "/proxies/p%20x")
    pair.same("PATCH", f"{toxics}/missing", content=b"{bad")  # 404 before the body is read
    pair.same("PATCH", f"{toxics}/b", content=b"{bad")
    pair.same("PATCH", f"{toxics}/b", [1])
    pair.same("PATCH", f"{toxics}/b", {"toxicity": None})
    pair.same("PATCH", f"{toxics}/b", {"toxicity": "x"})
    pair.same("PATCH", f"{toxics}/b", {"attributes": [1]})
    pair.same("PATCH", f"{toxics}/b", {"attributes": {"rate": 2.0}})
    pair.same("PATCH", f"{toxics}/b", {"toxicity": 0.25, "attributes": {"rate": 20}})
    pair.same("POST", f"{toxics}/b", {"attributes": {"rate": 30}})
    pair.same("GET", f"{toxics}/b")
    pair.same("DELETE", f"{toxics}/b")
    pair.same("DELETE", f"{toxics}/b")
    pair.same("GET", toxics)
    pair.same("POST", "/reset")
    pair.same("GET", toxics)


def test_proxy_update_and_populate_calls_match(pair, echo):
    upstream = f"127.0.0.1:{echo.port}"
    create_both(pair, echo)
    pair.same("PATCH", "/proxies/p", {"listen": "0"})
    pair.same("PATCH", "/proxies/p", {"listen": "127.0.0.1:99999"})
    pair.same("PATCH", "/proxies/p", {"listen": "127.0.0.1:abc"})
    pair.same("PATCH", "/proxies/p", {"listen": 5})
    pair.same("PATCH", "/proxies/p", [1])
    pair.same("GET", "/proxies/p")
    pair.same("POST", "/proxies/p", {"enabled": False})
    pair.same("PATCH", "/proxies/p", {"enabled": True})
    pair.same("POST", "/populate", {"name": "pp"})
    pair.same("POST", "/populate", [{"name": "pp"}])
    pair.same("POST", "/populate", [{"upstream": upstream}])
    pair.same("POST", "/populate", [])
    pair.same("POST", "/populate", [{"name": "pp", "listen": "127.0.0.1:0", "upstream": upstream},
                                    {"name": "pq", "listen": "127.0.0.1:0", "upstream": upstream, "enabled": False}])  # fmt: skip
    pair.same("POST", "/populate", [{"name": "pr", "listen": "127.0.0.1:0", "upstream": upstream},
                                    {"name": "ps", "listen": "127.0.0.1:99999", "upstream": upstream}])  # fmt: skip
    pair.same("POST", "/populate", [{"name": "p", "listen": "127.0.0.1:99999", "upstream": upstream}])
    pair.same("GET", "/proxies")
    pair.same("DELETE", "/proxies/pp")
    pair.same("DELETE", "/proxies/pp")


def test_same_address_written_otherwise_keeps_proxy_toxics_and_connections(pair, echo):
    """`localhost:P` is `127.0.0.1:P`: /populate and PATCH leave the proxy as it is."""
    proxies = create_both(pair, echo)
    pair.same("POST", "/proxies/p/toxics", {"type": "latency", "name": "lat", "attributes": {"latency": 1}})
    socks = [connect(port_of(p)) for p in proxies]
    for sock in socks:
        echo_time(sock)
    for proxy, client in zip(proxies, (pair.real, pair.ours), strict=True):
        same_address = proxy["listen"].replace("127.0.0.1", "localhost")
        answer = client.post("/populate", json=[{"name": "p", "listen": same_address, "upstream": proxy["upstream"]}])
        assert answer.status_code == 201 and [t["name"] for t in answer.json()["proxies"][0]["toxics"]] == ["lat"]
        answer = client.patch("/proxies/p", json={"listen": same_address})
        assert answer.status_code == 200 and answer.json()["listen"] == proxy["listen"]
    for sock in socks:  # the live connections went on
        echo_time(sock)
        sock.close()


def test_failed_patch_leaves_the_proxy_untouched(pair, echo):
    proxies = create_both(pair, echo)
    socks = [connect(port_of(p)) for p in proxies]
    real, ours = pair.same("PATCH", "/proxies/p", {"listen": "0"})
    assert real.status_code == 500
    for proxy, sock, client in zip(proxies, socks, (pair.real, pair.ours), strict=True):
        assert client.get("/proxies/p").json()["listen"] == proxy["listen"]
        echo_time(sock)
        sock.close()


def test_metrics_toxiproxy_byte_counters(pair, echo):
    proxies = create_both(pair, echo, "m")
    for proxy in proxies:
        with connect(port_of(proxy)) as sock:
            echo_time(sock, b"hello")
    pair.same("POST", "/proxies/m/toxics", {"type": "limit_data", "attributes": {"bytes": 3}})
    for proxy in proxies:  # 3 of the 5 bytes coming back go on: received and sent differ
        with connect(port_of(proxy)) as sock:
            sock.sendall(b"abcde")
            assert recv_exactly(sock, 3) == b"abc"

    def samples(client) -> dict[str, float]:
        found = {}
        for line in client.get("/metrics").text.splitlines():
            if line.startswith("toxiproxy_proxy_") and 'proxy="m"' in line:  # other tests' proxies live on
                series, value = line.rsplit(" ", 1)
                found[re.sub(r":\d+\"", ':<port>"', series)] = float(value)
            elif line.startswith("# TYPE toxiproxy_"):
                found[line] = 0
        return found

    label = 'listener="127.0.0.1:<port>",proxy="m",upstream="127.0.0.1:<port>"'
    wanted = {f'toxiproxy_proxy_received_bytes_total{{direction="upstream",{label}}}': 10,
              f'toxiproxy_proxy_received_bytes_total{{direction="downstream",{label}}}': 10,
              f'toxiproxy_proxy_sent_bytes_total{{direction="upstream",{label}}}': 10,
              f'toxiproxy_proxy_sent_bytes_total{{direction="downstream",{label}}}': 8}  # fmt: skip
    for client in (pair.real, pair.ours):  # Toxiproxy counts a connection when it has ended
        wait_for(lambda client=client: all(samples(client).get(k) == v for k, v in wanted.items()), what=f"byte metrics at {client.base_url}")
    assert samples(pair.ours) == samples(pair.real)


# -- the data path -----------------------------------------------------------------------------------
def test_stacked_latency_toxics_add_up(pair, echo):
    proxies = create_both(pair, echo)
    for name in ("one", "two"):
        pair.same("POST", "/proxies/p/toxics", {"type": "latency", "name": name, "attributes": {"latency": 100}})
    real_time, ours_time = (min(echo_time(connect(port_of(p))) for _ in range(2)) for p in proxies)
    assert real_time >= 0.195 and ours_time >= 0.195, (real_time, ours_time)
    assert abs(ours_time - real_time) < 0.1, (real_time, ours_time)  # generous: a shared, loaded machine


def test_latency_jitter_and_upstream_latency_time_alike(pair, echo):
    proxies = create_both(pair, echo)
    pair.same("POST", "/proxies/p/toxics", {"type": "latency", "stream": "upstream", "attributes": {"latency": 60}})
    pair.same("POST", "/proxies/p/toxics", {"type": "latency", "attributes": {"latency": 40, "jitter": 5}})
    real_time, ours_time = (min(echo_time(connect(port_of(p))) for _ in range(2)) for p in proxies)
    assert 0.09 < real_time < 0.3 and 0.09 < ours_time < 0.3, (real_time, ours_time)
    assert abs(ours_time - real_time) < 0.1, (real_time, ours_time)


def test_timeout_limit_data_and_slicer_behave_alike(pair, echo):
    proxies = create_both(pair, echo)
    pair.same("POST", "/proxies/p/toxics", {"type": "slicer", "attributes": {"average_size": 10, "size_variation": 3}})
    payload = bytes(range(256)) * 40
    for proxy in proxies:
        with connect(port_of(proxy)) as sock:
            sock.sendall(payload)
            assert recv_exactly(sock, len(payload)) == payload
    pair.same("DELETE", "/proxies/p/toxics/slicer_downstream")
    pair.same("POST", "/proxies/p/toxics", {"type": "limit_data", "attributes": {"bytes": 6}})
    for proxy in proxies:
        with connect(port_of(proxy)) as sock:
            sock.sendall(b"0123456789")
            got = b""
            while chunk := sock.recv(100):
                got += chunk
            assert got == b"012345"
    pair.same("POST", "/reset")
    pair.same("POST", "/proxies/p/toxics", {"type": "timeout", "attributes": {"timeout": 150}})
    for proxy in proxies:
        with connect(port_of(proxy)) as sock:
            started = time.monotonic()
            sock.sendall(b"held")
            try:
                assert sock.recv(10) == b""
            except ConnectionResetError:
                pass
            assert 0.12 < time.monotonic() - started < 2


def test_disabled_and_deleted_proxies_refuse_alike(pair, echo):
    proxies = create_both(pair, echo)
    pair.same("POST", "/proxies/p", {"enabled": False})
    for proxy in proxies:
        with pytest.raises(ConnectionRefusedError):
            connect(port_of(proxy))
    pair.same("POST", "/proxies/p", {"enabled": True})
    for proxy in proxies:
        with connect(port_of(proxy)) as sock:
            echo_time(sock)
    pair.same("DELETE", "/proxies/p")
    for proxy in proxies:
        with pytest.raises(ConnectionRefusedError):
            connect(port_of(proxy))


def test_unreachable_upstream_closes_the_client_with_a_fin_alike(pair):
    """Nobody at the upstream: accepted, then closed cleanly (Toxiproxy's `client.Close()`); the
    client reads EOF, not a reset (Go clients took our RST for a connect error, issue 25)."""
    proxies = pair.same("POST", "/proxies", {"name": "dead", "listen": "127.0.0.1:0", "upstream": f"localhost:{dead_port()}"})
    for proxy in (p.json() for p in proxies):
        assert [how_it_closes(port_of(proxy)) for _ in range(10)] == ["eof"] * 10


# -- deliberate differences (docs/design.md, "Where the proxy differs from Toxiproxy") --------------
def test_no_listen_host_binds_loopback_not_every_interface(pair, echo):
    real, ours = pair.call("POST", "/proxies", {"name": "open", "listen": ":0", "upstream": f"127.0.0.1:{echo.port}"})
    assert real.status_code == ours.status_code == 201
    assert real.json()["listen"].startswith("[::]:")
    assert ours.json()["listen"].startswith("127.0.0.1:")


def test_negative_attribute_refused(pair, echo):
    create_both(pair, echo)
    real, ours = pair.call("POST", "/proxies/p/toxics", {"type": "latency", "attributes": {"latency": -5}})
    assert real.status_code == 200
    assert ours.status_code == 400 and "must not be negative" in ours.json()["error"]


def test_name_too_long_to_route_refused_at_creation(pair, echo):
    name = "n" * (MAX_NAME_BYTES + 1)
    real, ours = pair.call("POST", "/proxies", {"name": name, "upstream": f"127.0.0.1:{echo.port}", "enabled": False})
    assert real.status_code == 201
    assert ours.status_code == 400 and "would not fit in a request URL" in ours.json()["error"]
    real, ours = pair.call("POST", "/populate", [{"name": name, "upstream": f"127.0.0.1:{echo.port}", "enabled": False}])
    assert real.status_code == 201 and ours.status_code == 400
    create_both(pair, echo)
    real, ours = pair.call("POST", "/proxies/p/toxics", {"type": "noop", "name": name})
    assert real.status_code == 200 and ours.status_code == 400
    longest = "n" * MAX_NAME_BYTES  # the longest we take is routable, toxic name too
    assert pair.ours.post("/proxies", json={"name": longest, "upstream": "127.0.0.1:1", "enabled": False}).status_code == 201
    assert pair.ours.post(f"/proxies/{longest}/toxics", json={"type": "noop", "name": "é" * (MAX_NAME_BYTES // 2)}).status_code == 200
    assert pair.ours.get(f"/proxies/{longest}/toxics/{_quote('é' * (MAX_NAME_BYTES // 2))}").status_code == 200


def test_cachestorm_info_is_ours_only(pair):
    real, ours = pair.call("GET", "/cachestorm")
    assert real.status_code == 404
    assert ours.status_code == 200 and set(ours.json()) >= {"cachestorm", "fastpath", "sockmap"}
