"""redis_latency, redis_error and redis_failover through a real Valkey with redis-py (RESP2 and
RESP3, pipelines and MULTI/EXEC)."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
import redis
from cachestorm.chaos.toxiproxy import ToxiproxyClient, ToxiproxyError
from redis.backoff import NoBackoff
from redis.retry import Retry


@pytest.fixture()
def setup(valkey, proxy_process):
    """(toxiproxy client, direct redis, a factory of proxied redis clients)."""
    upstream = valkey.url.split("//")[1].split("/")[0]
    client = ToxiproxyClient(proxy_process.api_url)
    proxy = client.create_proxy("redis", "127.0.0.1:0", upstream)
    direct = redis.Redis.from_url(valkey.url)
    direct.flushall()
    made = []

    def proxied(**options) -> redis.Redis:
        made.append(redis.Redis.from_url(f"redis://{proxy['listen']}/0", socket_timeout=5, **options))
        return made[-1]

    yield client, direct, proxied
    for one in made:
        one.close()
    direct.close()
    client.delete_proxy("redis")
    client.close()


def no_retry() -> Retry:
    """redis-py retries a failed command on a new connection by default: these tests see each failure."""
    return Retry(NoBackoff(), 0)


def timed(call) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


# -- per-command and per-key latency ---------------------------------------------------------
def test_slow_sets_fast_gets(setup):
    client, direct, proxied = setup
    r = proxied()
    r.set("k", "v")
    client.add_toxic("redis", "redis_latency", {"latency": 400, "commands": ["set"]})
    assert timed(lambda: r.set("k", "w")) >= 0.38
    assert timed(lambda: r.get("k")) < 0.2
    assert direct.get("k") == b"w"


def test_only_hot_keys_are_slow_and_a_pipeline_waits_for_its_slow_command(setup):
    client, _, proxied = setup
    r = proxied()
    r.ping()
    client.add_toxic("redis", "redis_latency", {"latency": 400, "keys": ["hot:*"]})
    assert timed(lambda: r.get("cold:1")) < 0.2
    assert timed(lambda: r.get("hot:1")) >= 0.38
    assert timed(lambda: r.mget("cold:1", "hot:2")) >= 0.38  # one of its keys is hot
    pipe = r.pipeline(transaction=False)
    pipe.set("cold:a", 1).set("hot:a", 2).get("cold:a").get("hot:a")
    started = time.monotonic()
    assert pipe.execute() == [True, True, b"1", b"2"]
    assert time.monotonic() - started >= 0.75  # two slow commands, one after the other


def test_latency_toxicity_is_a_share_of_commands_on_one_connection(setup):
    client, _, proxied = setup
    r = proxied()
    r.ping()
    client.add_toxic("redis", "redis_latency", {"latency": 30, "commands": ["GET"]}, toxicity=0.5)
    slow = sum(timed(lambda: r.get("x")) >= 0.028 for _ in range(60))
    assert 10 <= slow <= 50, slow
    delayed = client.get_proxy("redis")["stats"]["commands_faulted"]["redis_latency"]
    assert 10 <= delayed <= slow, (slow, delayed)  # every delayed GET is slow; on a loaded box a few more


# -- injected error replies --------------------------------------------------------------------
@pytest.mark.parametrize(("error", "exception", "get_fails"), [
    ("OOM", redis.exceptions.OutOfMemoryError, False),
    ("READONLY", redis.exceptions.ReadOnlyError, False),
    ("LOADING", redis.exceptions.BusyLoadingError, True),
    ("BUSY", redis.exceptions.ResponseError, True),
])
def test_each_error_refuses_what_a_real_server_refuses(setup, error, exception, get_fails):
    client, direct, proxied = setup
    direct.set("k", "before")
    client.add_toxic("redis", "redis_error", {"error": error})
    r = proxied()  # a new connection: redis-py's handshake (CLIENT SETINFO, SELECT) is not refused
    with pytest.raises(exception, match="^BUSY" if error == "BUSY" else None):
        r.set("k", "after")
    if get_fails:
        with pytest.raises(exception):
            r.get("k")
    else:
        assert r.get("k") == b"before"
    if error == "OOM":
        assert r.delete("k") == 1  # a write that frees memory still runs out of memory
    else:
        assert direct.get("k") == b"before"


def test_connection_set_up_is_never_refused_by_default(setup):
    client, _, proxied = setup
    client.add_toxic("redis", "redis_error", {"error": "LOADING"})
    r = redis.Redis.from_url(f"redis://{client.get_proxy('redis')['listen']}/1", protocol=3, socket_timeout=5)
    try:
        info = r.client_info()  # HELLO 3, CLIENT SETINFO and SELECT 1 went through
        assert (int(info["resp"]), int(info["db"])) == (3, 1), info
        with pytest.raises(redis.exceptions.BusyLoadingError):
            r.ping()
    finally:
        r.close()


def test_subscribed_connections_are_left_alone(setup):
    client, direct, proxied = setup
    client.add_toxic("redis", "redis_error", {"error": "LOADING"})
    pubsub = proxied().pubsub()
    pubsub.subscribe("news")
    assert pubsub.get_message(timeout=3)["type"] == "subscribe"
    direct.publish("news", "hello")
    assert pubsub.get_message(timeout=3)["data"] == b"hello"
    pubsub.ping()  # in RESP2 subscribed mode its reply is a message, not a reply to pair with it
    assert pubsub.get_message(timeout=3)["data"] == b""
    pubsub.close()


def test_redis_py_retries_loading_on_a_new_connection(setup):
    """What a user of LOADING faults should know: redis-py's BusyLoadingError is a ConnectionError.
    redis.Redis(host, port) retries those 10 times by default (backoff from 10 ms, reconnecting each
    time), so a share of -LOADING mostly shows as reconnects and latency; Redis.from_url does not
    retry (as in the targets, which turn retries off), so every refusal surfaces."""
    client, direct, proxied = setup
    direct.set("k", "v")
    host, port = client.get_proxy("redis")["listen"].rsplit(":", 1)
    retrying = redis.Redis(host=host, port=int(port), socket_timeout=5)
    retrying.ping()
    opened = client.get_proxy("redis")["stats"]["connections_total"]
    # 0.3: eleven refusals in a row (past redis-py's 10 retries) are a 2e-6 event per GET, not 2% as at 0.5
    client.add_toxic("redis", "redis_error", {"error": "LOADING", "commands": ["GET"]}, toxicity=0.3)
    try:
        assert all(retrying.get("k") == b"v" for _ in range(40))  # nothing surfaced
    finally:
        retrying.close()
    refused = client.get_proxy("redis")["stats"]["commands_faulted"]["redis_error"]
    assert refused >= 5, refused  # ~17 expected (p / (1 - p) per GET)
    assert client.get_proxy("redis")["stats"]["connections_total"] - opened == refused  # one reconnect each
    plain = proxied()
    surfaced = 0
    for _ in range(40):
        try:
            plain.get("k")
        except redis.exceptions.BusyLoadingError:
            surfaced += 1
    assert surfaced >= 3, surfaced  # ~12 of 40 expected at toxicity 0.3


def test_custom_error_on_hot_keys_only(setup):
    client, direct, proxied = setup
    client.add_toxic("redis", "redis_error", {"error": "TRYAGAIN slot migrating", "keys": ["hot:*"]})
    r = proxied()
    assert r.set("cold:1", "v") is True
    with pytest.raises(redis.exceptions.TryAgainError):
        r.set("hot:1", "v")
    with pytest.raises(redis.exceptions.TryAgainError):
        r.delete("cold:1", "hot:1")
    assert direct.get("cold:1") == b"v" and direct.get("hot:1") is None


def test_error_toxicity_is_a_share_of_commands_on_one_connection(setup, proxy_process):
    client, direct, proxied = setup
    client.add_toxic("redis", "redis_error", {"error": "OOM"}, toxicity=0.5)
    r = proxied()
    failed = 0
    for index in range(300):
        try:
            r.set(f"s{index}", "v")
        except redis.exceptions.OutOfMemoryError:
            failed += 1
    assert 100 <= failed <= 200, failed
    assert len(direct.keys("s*")) == 300 - failed
    assert client.get_proxy("redis")["stats"]["commands_faulted"] == {"redis_error": failed}
    metrics = httpx.get(f"{proxy_process.api_url}/metrics").text
    assert f'cachestorm_proxy_commands_faulted_total{{proxy="redis",type="redis_error"}} {failed}\n' in metrics


@pytest.mark.parametrize("protocol", [2, 3])
def test_pipelined_replies_stay_in_order(setup, protocol):
    client, direct, proxied = setup
    direct.set("a", "1")
    client.add_toxic("redis", "redis_error", {"error": "READONLY"})
    r = proxied(protocol=protocol)
    pipe = r.pipeline(transaction=False)
    pipe.get("a").set("b", "2").hgetall("nope").incr("n").exists("a").get("b").ping()
    results = pipe.execute(raise_on_error=False)
    assert results[0] == b"1" and results[2] == {} and results[4] == 1 and results[5] is None
    assert isinstance(results[1], redis.exceptions.ReadOnlyError)
    assert isinstance(results[3], redis.exceptions.ReadOnlyError)
    assert results[6] is True
    assert direct.get("b") is None and direct.get("n") is None


def test_resp3_pushes_between_replies_do_not_shift_them(setup):
    client, direct, proxied = setup
    r = proxied(protocol=3)
    r.execute_command("CLIENT", "TRACKING", "ON")
    direct.set("tracked", "1")
    client.add_toxic("redis", "redis_error", {"error": "READONLY", "commands": ["SET"]})
    pipe = r.pipeline(transaction=False)
    # the DEL of a key this connection tracks makes the server push an invalidation (">") right
    # after the DEL's reply, while the refused SET's reply waits its turn behind the next GET's
    pipe.get("tracked").delete("tracked").get("other").set("w", "1").get("tracked")
    results = pipe.execute(raise_on_error=False)
    assert results[:3] == [b"1", 1, None] and results[4] is None, results
    assert isinstance(results[3], redis.exceptions.ReadOnlyError)


@pytest.mark.parametrize("protocol", [2, 3])
def test_a_long_pipeline_with_random_refusals_stays_in_sync(setup, protocol):
    client, direct, proxied = setup
    direct.mset({f"k{i}": f"v{i}" for i in range(50)})
    client.add_toxic("redis", "redis_error", {"error": "ERR refused", "commands": ["GET"]}, toxicity=0.3)
    pipe = proxied(protocol=protocol).pipeline(transaction=False)
    for index in range(2000):  # many TCP chunks, replies split anywhere
        pipe.get(f"k{index % 50}")
        pipe.strlen(f"k{index % 50}")
    results = pipe.execute(raise_on_error=False)
    refused = 0
    for index in range(2000):
        got, length = results[2 * index], results[2 * index + 1]
        assert length == len(f"v{index % 50}"), (index, length)
        if isinstance(got, redis.exceptions.ResponseError):
            refused += 1
        else:
            assert got == f"v{index % 50}".encode(), (index, got)
    assert 400 <= refused <= 800, refused


@pytest.mark.parametrize("protocol", [2, 3])
def test_a_refused_command_inside_multi_aborts_the_transaction(setup, protocol):
    client, direct, proxied = setup
    client.add_toxic("redis", "redis_error", {"error": "OOM", "keys": ["hot:*"]})
    r = proxied(protocol=protocol)
    pipe = r.pipeline(transaction=True)
    pipe.set("cold:1", "v").set("hot:1", "v").incr("cold:n")
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        pipe.execute()
    # as with a real refusal at queue time: nothing in the transaction ran
    assert direct.get("cold:1") is None and direct.get("cold:n") is None
    # the connection is in sync: the next transaction and commands work
    pipe = r.pipeline(transaction=True)
    pipe.set("cold:2", "x").get("cold:2")
    assert pipe.execute() == [True, b"x"]
    assert r.get("cold:2") == b"x"


def wire_replies(port: int, wire: bytes, replies: int, step: int = 0) -> bytes:
    """Send raw RESP (in `step`-byte writes when set) and read until `replies` complete lines came
    (every reply here is one line)."""
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        for index in range(0, len(wire), step or len(wire)):
            sock.sendall(wire[index : index + (step or len(wire))])
            if step:
                time.sleep(0.002)
        got = b""
        while got.count(b"\r\n") < replies:
            chunk = sock.recv(4096)
            assert chunk, f"connection closed after {got!r}"
            got += chunk
    return got


def test_execabort_in_the_servers_words(setup, valkey):
    """A command refused inside MULTI aborts the EXEC with the server's own -EXECABORT, word for
    word what Valkey answers after a command it refused at queue time itself."""
    client, _, _ = setup
    valkey_port = int(valkey.url.split("//")[1].split("/")[0].rsplit(":", 1)[1])
    queued_get = b"*2\r\n$3\r\nGET\r\n$1\r\nx\r\n*1\r\n$4\r\nEXEC\r\n*1\r\n$4\r\nPING\r\n"
    real = wire_replies(valkey_port, b"*1\r\n$5\r\nMULTI\r\n*1\r\n$9\r\nNOSUCHCMD\r\n" + queued_get, 5)
    real_execabort = real.split(b"\r\n")[3] + b"\r\n"
    assert real_execabort.startswith(b"-EXECABORT ") and real.endswith(b"+PONG\r\n"), real
    client.add_toxic("redis", "redis_error", {"error": "READONLY"})
    port = int(client.get_proxy("redis")["listen"].rsplit(":", 1)[1])
    wire = b"*1\r\n$5\r\nMULTI\r\n*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$1\r\n1\r\n" + queued_get
    expected = (b"+OK\r\n-READONLY You can't write against a read only replica.\r\n+QUEUED\r\n"
                + real_execabort + b"+PONG\r\n")
    assert wire_replies(port, wire, 5, step=7) == expected  # commands split across TCP writes


def test_two_replying_toxics_on_one_connection_stay_in_order(setup):
    client, direct, proxied = setup
    client.add_toxic("redis", "redis_write_fail", {"commands": ["SET"]}, name="writes")
    client.add_toxic("redis", "redis_latency", {"latency": 20, "commands": ["GET"]}, name="slow")
    client.add_toxic("redis", "redis_error", {"error": "BUSY", "keys": ["hot:*"]}, name="busy")
    r = proxied()
    direct.set("cold", "c")
    for _ in range(3):
        pipe = r.pipeline(transaction=False)
        pipe.get("cold").set("cold", "x").get("hot:1").incr("cold:n").get("cold")
        results = pipe.execute(raise_on_error=False)
        assert results[0] == b"c" and results[4] == b"c", results
        assert isinstance(results[1], redis.exceptions.ResponseError) and "write failed" in str(results[1])
        assert isinstance(results[2], redis.exceptions.ResponseError) and str(results[2]).startswith("BUSY")
        assert isinstance(results[3], int)
    pipe = r.pipeline(transaction=True)
    pipe.incr("cold:n").get("hot:2")
    with pytest.raises(redis.exceptions.ResponseError, match="GET hot:2.*BUSY"):
        pipe.execute()
    for name in ("writes", "slow", "busy"):
        client.remove_toxic("redis", name)
    assert r.set("cold", "y") is True and r.get("cold") == b"y" and direct.get("cold:n") == b"3"
    deadline = time.monotonic() + 5  # with nothing left to sequence, the connection goes back to the engine
    while client.get_proxy("redis")["stats"]["connections_native"] != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.get_proxy("redis")["stats"]["connections_native"] == 1


def test_updating_toxicity_acts_on_live_connections_at_once(setup):
    client, _, proxied = setup
    r = proxied()
    client.add_toxic("redis", "redis_error", {"error": "OOM"}, name="oom")
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        r.set("k", "v")
    client.update_toxic("redis", "oom", toxicity=0)
    assert r.set("k", "v") is True  # the same connection
    client.update_toxic("redis", "oom", toxicity=1)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        r.set("k", "v")


def test_removing_the_toxic_mid_connection_keeps_it_in_sync(setup):
    client, direct, proxied = setup
    r = proxied()
    client.add_toxic("redis", "redis_error", {"error": "LOADING"}, name="loading")
    with pytest.raises(redis.exceptions.BusyLoadingError):
        r.get("x")
    client.remove_toxic("redis", "loading")
    assert r.set("x", "1") is True and r.get("x") == b"1"


@pytest.mark.parametrize(("attributes", "message"), [
    ({"error": "ERR two\r\nlines"}, "attribute error must be one of"),
    ({"error": ""}, "attribute error must be one of"),
    ({"commands": ["GET", "EXEC"]}, "EXEC cannot be faulted"),
    ({"keys": [""]}, "a key pattern must not be empty"),
    ({"keys": "hot:*"}, "cannot unmarshal string"),
])
def test_bad_attributes_are_one_line_400s(setup, attributes, message):
    client, _, _ = setup
    with pytest.raises(ToxiproxyError) as failure:
        client.add_toxic("redis", "redis_error", attributes)
    assert failure.value.status == 400
    assert message in str(failure.value) and "\n" not in str(failure.value)
    assert client.toxics("redis") == []


def test_bad_attribute_update_is_refused_and_keeps_the_toxic(setup):
    client, _, proxied = setup
    client.add_toxic("redis", "redis_error", {"error": "OOM"}, name="e")
    with pytest.raises(ToxiproxyError) as failure:
        client.update_toxic("redis", "e", {"commands": ["MULTI"]})
    assert failure.value.status == 400
    assert client.get_toxic("redis", "e")["attributes"]["commands"] == []
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        proxied().set("k", "v")


# -- failover ----------------------------------------------------------------------------------------
def test_failover_resets_refuses_writes_briefly_then_accepts(setup):
    client, direct, proxied = setup
    port = int(client.get_proxy("redis")["listen"].rsplit(":", 1)[1])
    raw = socket.create_connection(("127.0.0.1", port), timeout=3)
    raw.sendall(b"*1\r\n$4\r\nPING\r\n")
    assert raw.recv(100) == b"+PONG\r\n"
    r = proxied(retry=no_retry())
    assert r.set("k", "v1") is True
    opened = client.get_proxy("redis")["stats"]["connections_total"]
    client.add_toxic("redis", "redis_failover", {"refuse": 1500})
    with pytest.raises(ConnectionResetError):  # the old primary's connections die with RST
        raw.sendall(b"*1\r\n$4\r\nPING\r\n")
        raw.recv(100)
    raw.close()
    # redis-py finds its pooled connection dead at checkout and reconnects: to a node still a replica
    with pytest.raises(redis.exceptions.ReadOnlyError):
        r.set("k", "v2")
    assert client.get_proxy("redis")["stats"]["connections_total"] == opened + 1
    assert r.get("k") == b"v1"  # reads work meanwhile
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            assert r.set("k", "v3") is True
            break
        except redis.exceptions.ReadOnlyError:
            time.sleep(0.05)
    assert direct.get("k") == b"v3"
    assert time.monotonic() < deadline


def test_failover_down_resets_new_connections_then_loading(setup):
    client, _, proxied = setup
    client.add_toxic("redis", "redis_failover", {"down": 600, "refuse": 600, "error": "LOADING"})
    port = int(client.get_proxy("redis")["listen"].rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
        with pytest.raises(ConnectionResetError):  # nobody to talk to yet
            raw.sendall(b"*1\r\n$4\r\nPING\r\n")
            raw.recv(100)
    time.sleep(0.7)
    r = proxied()
    with pytest.raises(redis.exceptions.BusyLoadingError):
        r.get("k")
    time.sleep(0.7)
    assert r.get("k") is None
