"""Conformance of the Toxiproxy v2 API: always against cachestorm's proxy, and also against a real
Toxiproxy: the one at TOXIPROXY_URL, else one started from beside the checkout when there is one
(chaos.toxiproxy_server). Tests of cachestorm extras are skipped there."""

from __future__ import annotations

import os
import socket
import time

import httpx
import pytest
from cachestorm.chaos import toxiproxy_server
from cachestorm.chaos.toxiproxy import ToxiproxyClient, ToxiproxyError

from tests.net_servers import dead_port, how_it_closes

REAL_BINARY = toxiproxy_server.find_binary()
BACKENDS = ["ours"] + (["toxiproxy"] if os.environ.get("TOXIPROXY_URL") or REAL_BINARY else [])


@pytest.fixture(scope="module")
def real_toxiproxy_url():
    if os.environ.get("TOXIPROXY_URL"):
        yield os.environ["TOXIPROXY_URL"]
        return
    server = toxiproxy_server.start(REAL_BINARY)
    yield server.api_url
    server.stop()


@pytest.fixture(params=BACKENDS)
def api(request, proxy_process):
    url = proxy_process.api_url if request.param == "ours" else request.getfixturevalue("real_toxiproxy_url")
    http = httpx.Client(base_url=url, headers={"User-Agent": "cachestorm-tests"}, timeout=10)
    http.backend = request.param
    http.post("/reset")
    for name in list(http.get("/proxies").json()):
        http.delete(f"/proxies/{name}")
    yield http
    for name in list(http.get("/proxies").json()):
        http.delete(f"/proxies/{name}")
    http.close()


def only_ours(api):
    if api.backend != "ours":
        pytest.skip("cachestorm extra")


def make_proxy(api, echo, name="echo", **extra):
    body = {"name": name, "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{echo.port}", **extra}
    response = api.post("/proxies", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def port_of(proxy) -> int:
    return int(proxy["listen"].rsplit(":", 1)[1])


def roundtrip(port, payload=b"ping", timeout=2.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        return sock.recv(len(payload))


def error_of(response) -> dict:
    import json

    return json.loads(response.text)


# -- proxies ------------------------------------------------------------------------
def test_version_is_json(api):
    response = api.get("/version")
    assert response.status_code == 200
    assert list(response.json()) == ["version"]  # exactly: our own facts are at GET /cachestorm
    assert response.json()["version"].startswith("2.") or api.backend != "ours"  # a source build says "git"


def test_create_answers_real_port_and_proxies(api, echo):
    proxy = make_proxy(api, echo)
    assert set(proxy) >= {"name", "listen", "upstream", "enabled", "toxics"}
    assert proxy["enabled"] is True and proxy["toxics"] == []
    assert port_of(proxy) != 0
    assert roundtrip(port_of(proxy)) == b"ping"
    listing = api.get("/proxies").json()
    assert list(listing) == ["echo"] and listing["echo"]["listen"] == proxy["listen"]


def test_duplicate_missing_and_unknown_proxy_errors(api, echo):
    make_proxy(api, echo)
    dup = api.post("/proxies", json={"name": "echo", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{echo.port}"})
    assert dup.status_code == 409 and error_of(dup) == {"error": "proxy already exists", "status": 409}
    missing = api.post("/proxies", json={"name": "x", "listen": "127.0.0.1:0"})
    assert missing.status_code == 400 and error_of(missing) == {"error": "missing required field: upstream", "status": 400}
    missing = api.post("/proxies", json={"upstream": "127.0.0.1:1"})
    assert error_of(missing) == {"error": "missing required field: name", "status": 400}
    unknown = api.get("/proxies/nope")
    assert unknown.status_code == 404 and error_of(unknown) == {"error": "proxy not found", "status": 404}
    assert api.delete("/proxies/nope").status_code == 404
    assert api.post("/proxies", content=b"{not json").status_code == 400


def test_disable_closes_listener_and_connections_then_reenable_same_port(api, echo):
    proxy = make_proxy(api, echo)
    port = port_of(proxy)
    live = socket.create_connection(("127.0.0.1", port), timeout=2)
    live.sendall(b"a")
    assert live.recv(1) == b"a"
    answer = api.patch("/proxies/echo", json={"enabled": False})
    assert answer.status_code == 200 and answer.json()["enabled"] is False
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    try:  # the live connection was dropped
        assert live.recv(1) == b""
    except ConnectionResetError:
        pass
    live.close()
    answer = api.post("/proxies/echo", json={"enabled": True})
    assert answer.json()["enabled"] is True and answer.json()["listen"] == proxy["listen"]
    assert roundtrip(port) == b"ping"


def test_delete_proxy(api, echo):
    proxy = make_proxy(api, echo)
    assert api.delete("/proxies/echo").status_code == 204
    assert api.get("/proxies/echo").status_code == 404
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port_of(proxy)), timeout=2)


def test_listen_address_in_use_is_500_and_server_keeps_serving(api, echo):
    proxy = make_proxy(api, echo)
    clash = api.post("/proxies", json={"name": "clash", "listen": proxy["listen"], "upstream": f"127.0.0.1:{echo.port}"})
    assert clash.status_code == 500
    assert "address already in use" in error_of(clash)["error"]
    assert api.get("/proxies/clash").status_code == 404
    assert roundtrip(port_of(proxy)) == b"ping"


def test_upstream_refusing_closes_the_client(api, echo):
    response = api.post("/proxies", json={"name": "dead", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{dead_port()}"})
    port = port_of(response.json())
    assert [how_it_closes(port) for _ in range(5)] == ["eof"] * 5  # accepted, then a FIN
    # bytes the client sent may arrive before the close (then the kernel answers with RST), or not
    assert how_it_closes(port, send=b"x") in ("eof", "reset")
    live = make_proxy(api, echo)
    assert roundtrip(port_of(live)) == b"ping"


def test_browser_user_agent_is_forbidden(api):
    response = api.get("/proxies", headers={"User-Agent": "Mozilla/5.0 (X11)"})
    assert response.status_code == 403


def test_populate_creates_updates_and_reports_errors(api, echo):
    body = [{"name": "a", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{echo.port}"},
            {"name": "b", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{echo.port}", "enabled": False}]
    response = api.post("/populate", json=body)
    assert response.status_code == 201
    proxies = {p["name"]: p for p in response.json()["proxies"]}
    assert proxies["a"]["enabled"] is True and proxies["b"]["enabled"] is False
    assert roundtrip(port_of(proxies["a"])) == b"ping"
    bad = api.post("/populate", json=[{"name": "c"}])
    assert bad.status_code == 400
    assert bad.json()["proxies"] is None and bad.json()["error"].startswith("missing required field")
    assert api.get("/proxies/c").status_code == 404


def test_reset_reenables_and_removes_toxics(api, echo):
    proxy = make_proxy(api, echo)
    api.post("/proxies/echo/toxics", json={"type": "latency", "attributes": {"latency": 1000}})
    api.post("/proxies/echo", json={"enabled": False})
    assert api.post("/reset").status_code == 204
    shown = api.get("/proxies/echo").json()
    assert shown["enabled"] is True and shown["toxics"] == []
    started = time.monotonic()
    assert roundtrip(port_of(proxy)) == b"ping"
    assert time.monotonic() - started < 0.5


# -- toxics -------------------------------------------------------------------------
def test_toxic_defaults_and_shape(api, echo):
    make_proxy(api, echo)
    response = api.post("/proxies/echo/toxics", json={"type": "latency", "attributes": {"latency": 10}})
    assert response.status_code == 200
    toxic = response.json()
    assert toxic["name"] == "latency_downstream" and toxic["stream"] == "downstream"
    assert toxic["toxicity"] == 1 and toxic["type"] == "latency"
    assert toxic["attributes"]["latency"] == 10 and toxic["attributes"]["jitter"] == 0
    zero = api.post("/proxies/echo/toxics", json={"name": "z", "type": "noop", "stream": "upstream", "toxicity": 0})
    assert zero.json()["toxicity"] == 0 and zero.json()["stream"] == "upstream"
    listed = api.get("/proxies/echo/toxics").json()  # upstream toxics first, as Toxiproxy lists them
    assert [t["name"] for t in listed] == ["z", "latency_downstream"]
    assert api.get("/proxies/echo/toxics/z").json()["type"] == "noop"
    assert [t["name"] for t in api.get("/proxies/echo").json()["toxics"]] == ["z", "latency_downstream"]


def test_toxic_errors(api, echo):
    make_proxy(api, echo)
    bad_type = api.post("/proxies/echo/toxics", json={"type": "nonsense"})
    assert bad_type.status_code == 400 and error_of(bad_type) == {"error": "invalid toxic type", "status": 400}
    bad_stream = api.post("/proxies/echo/toxics", json={"type": "latency", "stream": "sideways"})
    assert bad_stream.status_code == 400
    assert error_of(bad_stream)["error"] == "stream was invalid, can be either upstream or downstream"
    bad_value = api.post("/proxies/echo/toxics", json={"type": "latency", "attributes": {"latency": "slow"}})
    assert bad_value.status_code == 400 and error_of(bad_value)["error"].startswith("bad request body")
    assert api.post("/proxies/echo/toxics", json={"name": "t", "type": "latency"}).status_code == 200
    dup = api.post("/proxies/echo/toxics", json={"name": "t", "type": "noop"})
    assert dup.status_code == 409 and error_of(dup) == {"error": "toxic already exists", "status": 409}
    missing = api.get("/proxies/echo/toxics/none")
    assert missing.status_code == 404 and error_of(missing) == {"error": "toxic not found", "status": 404}
    assert api.delete("/proxies/echo/toxics/none").status_code == 404
    assert api.post("/proxies/none/toxics", json={"type": "noop"}).status_code == 404
    assert api.get("/proxies/echo/toxics").status_code == 200  # still serving


def test_toxic_update_merges_and_delete(api, echo):
    make_proxy(api, echo)
    api.post("/proxies/echo/toxics", json={"name": "lat", "type": "latency", "toxicity": 0.5,
                                           "attributes": {"latency": 10, "jitter": 5}})
    updated = api.patch("/proxies/echo/toxics/lat", json={"attributes": {"latency": 20}})
    assert updated.status_code == 200
    assert updated.json()["attributes"] == {**updated.json()["attributes"], "latency": 20, "jitter": 5}
    assert updated.json()["toxicity"] == 0.5
    again = api.post("/proxies/echo/toxics/lat", json={"toxicity": 1})
    assert again.json()["toxicity"] == 1 and again.json()["attributes"]["latency"] == 20
    assert api.patch("/proxies/echo/toxics/none", json={"toxicity": 1}).status_code == 404
    assert api.delete("/proxies/echo/toxics/lat").status_code == 204
    assert api.get("/proxies/echo/toxics").json() == []


def test_unknown_attributes_are_ignored(api, echo):
    make_proxy(api, echo)
    response = api.post("/proxies/echo/toxics", json={"type": "latency", "attributes": {"latency": 1, "colour": "red"}})
    assert response.status_code == 200 and "colour" not in response.json()["attributes"]


# -- the toxiproxy-python client, unchanged ------------------------------------------
def test_toxiproxy_python_client_works_unchanged(api, echo):
    from toxiproxy import Toxiproxy

    server = Toxiproxy()
    url = httpx.URL(str(api.base_url))
    server.update_api_consumer(url.host, url.port)
    assert server.running()
    assert server.version()
    proxy = server.create(upstream=f"127.0.0.1:{echo.port}", name="py")
    assert "py" in server.proxies()
    proxy.add_toxic(type="latency", attributes={"latency": 100})
    assert set(proxy.toxics()) == {"latency_downstream"}
    port = port_of({"listen": proxy.listen})
    started = time.monotonic()
    assert roundtrip(port) == b"ping"
    assert time.monotonic() - started >= 0.09
    proxy.destroy_toxic("latency_downstream")
    assert proxy.toxics() == {}
    with proxy.down():
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2)
    assert roundtrip(port) == b"ping"
    assert server.reset()
    created = server.populate([{"name": "py2", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{echo.port}"}])
    assert [p.name for p in created] == ["py2"]
    server.destroy_all()
    assert server.proxies() == {}


# -- our client over the same API ------------------------------------------------------
def test_our_client_round_trip(api, echo):
    client = ToxiproxyClient(str(api.base_url))
    proxy = client.create_proxy("c", "127.0.0.1:0", f"127.0.0.1:{echo.port}")
    assert client.get_proxy("c")["listen"] == proxy["listen"]
    toxic = client.add_toxic("c", "latency", {"latency": 5}, stream="upstream")
    assert toxic["name"] == "latency_upstream"
    assert client.update_toxic("c", "latency_upstream", toxicity=0.5)["toxicity"] == 0.5
    assert [t["name"] for t in client.toxics("c")] == ["latency_upstream"]
    assert client.remove_toxic("c", "latency_upstream") is True
    assert client.remove_toxic("c", "latency_upstream") is False  # safe twice
    assert client.update_proxy("c", enabled=False)["enabled"] is False
    client.reset()
    assert client.get_proxy("c")["enabled"] is True
    assert client.populate([{"name": "d", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{echo.port}"}])[0]["name"] == "d"
    with pytest.raises(ToxiproxyError) as failure:
        client.create_proxy("c", "127.0.0.1:0", f"127.0.0.1:{echo.port}")
    assert failure.value.status == 409 and "proxy already exists" in str(failure.value)
    client.delete_proxy("d")
    assert client.version().startswith("2.") or api.backend != "ours"
    assert client.is_ours() is (api.backend == "ours")


def test_client_reports_connection_refused_in_one_line():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ToxiproxyError) as failure:
        ToxiproxyClient(f"http://127.0.0.1:{port}").proxies()
    assert "cannot reach the Toxiproxy API" in str(failure.value) and "\n" not in str(failure.value)


# -- cachestorm extras ------------------------------------------------------------------
def test_negative_attribute_is_400_ours(api, echo):
    only_ours(api)
    make_proxy(api, echo)
    response = api.post("/proxies/echo/toxics", json={"type": "latency", "attributes": {"latency": -5}})
    assert response.status_code == 400 and "must not be negative" in error_of(response)["error"]


def test_metrics_and_stats_ours(api, echo):
    only_ours(api)
    proxy = make_proxy(api, echo)
    assert roundtrip(port_of(proxy), b"12345") == b"12345"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        stats = api.get("/proxies/echo").json()["stats"]
        if stats["bytes_downstream"] == 5 and stats["connections_active"] == 0:
            break
        time.sleep(0.02)
    assert stats["connections_total"] == 1 and stats["bytes_upstream"] == 5 and stats["bytes_downstream"] == 5
    text = api.get("/metrics").text
    assert 'cachestorm_proxy_connections_total{proxy="echo"} 1' in text
    assert 'cachestorm_proxy_bytes_total{proxy="echo",direction="downstream"} 5' in text


def test_body_over_the_limit_is_413_and_long_lines_431_not_dropped_connections_ours(api):
    from cachestorm.chaos.proxy.http import MAX_BODY, MAX_REQUEST_LINE

    only_ours(api)
    answer = api.post("/proxies", content=b"x" * (MAX_BODY + 1))
    assert answer.status_code == 413 and "too large" in answer.json()["error"]
    url = httpx.URL(str(api.base_url))
    with socket.create_connection((url.host, url.port), timeout=5) as sock:  # longer than httpx sends
        sock.sendall(b"GET /proxies/" + b"n" * MAX_REQUEST_LINE + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert api.get("/version").status_code == 200


def test_api_binds_loopback_and_ready_file(tmp_path):
    import json
    import subprocess
    import sys

    ready = tmp_path / "ready.json"
    process = subprocess.Popen([sys.executable, "-m", "cachestorm.chaos.proxy", "--port", "0", "--ready-file", str(ready)])
    try:
        deadline = time.monotonic() + 15
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        info = json.loads(ready.read_text())
        assert info["pid"] == process.pid and info["api_url"].startswith("http://127.0.0.1:")
        assert httpx.get(info["api_url"] + "/version").status_code == 200
    finally:
        process.terminate()
        assert process.wait(10) == 0  # SIGTERM stops cleanly
