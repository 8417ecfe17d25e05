"""`cachestorm bench proxy`: Redis GETs direct vs through cachestorm's proxy, and through the real
Toxiproxy when there is one beside the checkout (chaos.toxiproxy_server), side by side in one run.

Starts a private Valkey (TCP and a Unix socket) and three proxy processes: `kernel` is the native
engine with toxic-free pairs forwarded in the kernel by BPF sockmap where available, `native` is the
engine's epoll thread only (CACHESTORM_PROXY_SOCKMAP=0) and `python` the Python path
(CACHESTORM_PROXY_FASTPATH=0). Each has proxies reaching Valkey over TCP loopback and over its Unix
socket (StackSettings.unix_upstreams); clients always reach the proxy over TCP. The stack runs
kernel/unix where sockmap is available, else native/unix.
With a toxic: `toxic/tcp` and `toxic/unix` are proxies of the kernel process with one active
latency toxic of 0 ms, which forces every connection onto the Python toxic path.
The real Toxiproxy (when found) reaches Valkey over TCP: `toxiproxy` without a toxic,
`toxiproxy+toxic` with the same latency 0 ms toxic. Goals against it: our toxic-free proxy as the
stack runs it >= 1.5x its GET/s, our toxic path >= 1.0x its toxic path.
Runs `redis-benchmark -t get -c C -n N --csv` against direct TCP and every proxy, alternating
for several rounds so the shared machine's noise hits each alike. Prints throughput, p50/p99, the
ratios to direct and to the real Toxiproxy, and the load average (the machine is shared).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from cachestorm.core.errors import CachestormError

REDIS_BENCHMARK = "/usr/bin/redis-benchmark"
GOAL_THROUGHPUT_RATIO = 0.6
GOAL_ADDED_P50_US = 90.0
GOAL_VS_TOXIPROXY = 1.5  # toxic-free, ours as the stack runs it / the real Toxiproxy
GOAL_TOXIC_VS_TOXIPROXY = 1.0  # one latency 0 ms toxic on both
ZERO_LATENCY = {"latency": 0}


def _redis_benchmark_binary() -> str:
    path = REDIS_BENCHMARK if Path(REDIS_BENCHMARK).exists() else shutil.which("redis-benchmark")
    if not path:
        raise CachestormError("redis-benchmark is not installed; run `apt-get install redis-tools`")
    return path


def _run_round(binary: str, port: int, requests: int, clients: int) -> dict[str, float]:
    command = [binary, "-h", "127.0.0.1", "-p", str(port), "-t", "get", "-c", str(clients), "-n", str(requests), "--csv"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    if done.returncode != 0 or not rows:
        raise CachestormError(f"redis-benchmark failed on port {port}: {(done.stderr or done.stdout).strip()[:200]}")
    row = rows[0]
    return {
        "rps": float(row["rps"]),
        "p50_us": float(row.get("p50_latency_ms") or "nan") * 1000,
        "p99_us": float(row.get("p99_latency_ms") or "nan") * 1000,
    }


ENGINES = {  # engine -> extra environment of the proxy process
    "kernel": {"CACHESTORM_PROXY_FASTPATH": "1", "CACHESTORM_PROXY_SOCKMAP": "1"},
    "native": {"CACHESTORM_PROXY_FASTPATH": "1", "CACHESTORM_PROXY_SOCKMAP": "0"},
    "python": {"CACHESTORM_PROXY_FASTPATH": "0"},
}
UPSTREAMS = ("tcp", "unix")  # how the proxy reaches Valkey
PROXY_KINDS = [f"{engine}/{upstream}" for engine in ENGINES for upstream in UPSTREAMS]
TOXIC_KINDS = [f"toxic/{upstream}" for upstream in UPSTREAMS]  # on the kernel process
TOXIPROXY_KINDS = ["toxiproxy", "toxiproxy+toxic"]


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of process `pid` so far (0 for none: direct)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def run_proxy_benchmark(requests: int = 200_000, clients: int = 8, rounds: int = 3) -> dict:
    """Direct vs our proxy (native fast path, Python path, toxic path) vs the real Toxiproxy, alternating."""
    from cachestorm.chaos import toxiproxy_server
    from cachestorm.chaos.proxy.process import spawn
    from cachestorm.chaos.toxiproxy import ToxiproxyClient
    from cachestorm.stack.servers import start_redis

    binary = _redis_benchmark_binary()
    workdir = tempfile.mkdtemp(prefix="cachestorm-bench-proxy-")
    os.chmod(workdir, 0o755)  # as root, Valkey runs as an unprivileged user that must enter it
    valkey = start_redis(workdir, unix_socket=True)
    proxies: list = []
    fastpath_built = sockmap = False
    toxiproxy_binary = toxiproxy_server.find_binary()
    load_before = _load_average()
    try:
        upstream_tcp = valkey.url.split("//")[1].split("/")[0]
        upstreams = {"tcp": upstream_tcp, "unix": f"unix:{valkey.extra['unix_socket']}"}
        ports = {"direct": int(upstream_tcp.rsplit(":", 1)[1])}
        pids: dict[str, int | None] = {"direct": None}  # the process each kind's proxy runs in
        for engine, env in ENGINES.items():
            process = spawn(env=env, allow_unix=[valkey.extra['unix_socket']])  # the guard lists what it may reach
            proxies.append(process)
            with ToxiproxyClient(process.api_url) as client:
                for name, upstream in upstreams.items():
                    ports[f"{engine}/{name}"] = _bench_proxy(client, f"bench-{name}", upstream)
                    pids[f"{engine}/{name}"] = process.pid
                if engine == "kernel":
                    info = client.info() or {}
                    fastpath_built, sockmap = bool(info.get("fastpath")), bool(info.get("sockmap"))
                    for name, upstream in upstreams.items():
                        ports[f"toxic/{name}"] = _bench_proxy(client, f"bench-toxic-{name}", upstream, ZERO_LATENCY)
                        pids[f"toxic/{name}"] = process.pid
        if toxiproxy_binary is not None:
            real = toxiproxy_server.start(toxiproxy_binary, proxy_metrics=False)
            proxies.append(real)
            with ToxiproxyClient(real.api_url) as client:
                ports["toxiproxy"] = _bench_proxy(client, "bench-tcp", upstream_tcp)
                ports["toxiproxy+toxic"] = _bench_proxy(client, "bench-toxic", upstream_tcp, ZERO_LATENCY)
            pids["toxiproxy"] = pids["toxiproxy+toxic"] = real.popen.pid
        subprocess.run([binary, "-p", str(ports["direct"]), "-t", "set", "-n", "1000", "-q"], capture_output=True)
        for kind in ports:  # warm-up
            _run_round(binary, ports[kind], max(requests // 10, 1000), clients)
        samples: dict[str, list[dict[str, float]]] = {kind: [] for kind in ports}
        kinds = list(ports)
        for index in range(rounds):
            order = kinds if index % 2 == 0 else kinds[::-1]
            for kind in order:
                cpu_before = _cpu_seconds(pids[kind])
                sample = _run_round(binary, ports[kind], requests, clients)
                # the proxy process's own CPU per GET: unlike GET/s, hardly moved by the load of a
                # shared machine (in-kernel forwarding is not counted: softirq time is nobody's)
                sample["cpu_us"] = (_cpu_seconds(pids[kind]) - cpu_before) / requests * 1e6
                samples[kind].append(sample)
    finally:
        for process in proxies:
            process.stop()
        valkey.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    def summary(kind: str) -> dict[str, float]:
        rows = samples[kind]
        return {key: statistics.median(r[key] for r in rows) for key in ("rps", "p50_us", "p99_us", "cpu_us")} | {
            "rps_min": min(r["rps"] for r in rows),
            "rps_max": max(r["rps"] for r in rows),
        }

    def per_round(kind: str, base: str) -> list[float]:
        return [p["rps"] / d["rps"] for d, p in zip(samples[base], samples[kind], strict=True)]

    result: dict = {
        "requests": requests,
        "clients": clients,
        "rounds": rounds,
        "fastpath_built": fastpath_built,
        "sockmap": sockmap,
        "toxiproxy_binary": str(toxiproxy_binary) if toxiproxy_binary else None,
        "load_average": [load_before, _load_average()],
    }
    direct = result["direct"] = summary("direct")
    measured = [kind for kind in (*PROXY_KINDS, *TOXIC_KINDS, *TOXIPROXY_KINDS) if kind in samples]
    for kind in measured:
        row = result[kind] = summary(kind)
        ratios = per_round(kind, "direct")
        row["throughput_ratio"] = row["rps"] / direct["rps"]
        row["throughput_ratio_range"] = [min(ratios), max(ratios)]
        row["added_p50_us"] = row["p50_us"] - direct["p50_us"]
        row["added_p99_us"] = row["p99_us"] - direct["p99_us"]
    result["default_kind"] = "kernel/unix" if sockmap else "native/unix"  # StackSettings.unix_upstreams
    if toxiproxy_binary is not None:
        comparisons = {}  # ours -> (the real one's kind, goal)
        for kind in (result["default_kind"], "native/tcp", "python/tcp"):
            comparisons[kind] = ("toxiproxy", GOAL_VS_TOXIPROXY)
        for kind in TOXIC_KINDS:
            comparisons[kind] = ("toxiproxy+toxic", GOAL_TOXIC_VS_TOXIPROXY)
        result["vs_toxiproxy"] = {
            kind: {"against": base, "goal": goal, "ratio": result[kind]["rps"] / result[base]["rps"],
                   "range": [min(per_round(kind, base)), max(per_round(kind, base))],
                   "added_p50_us": result[kind]["p50_us"] - result[base]["p50_us"],
                   "cpu_ratio": result[kind]["cpu_us"] / result[base]["cpu_us"] if result[base]["cpu_us"] else float("nan")}
            for kind, (base, goal) in comparisons.items()
        }  # fmt: skip
    _print(result)
    return result


def _bench_proxy(client, name: str, upstream: str, latency_toxic: dict | None = None) -> int:
    """A proxy on a free loopback port (with a latency toxic if given); returns its port."""
    listen = client.create_proxy(name, "127.0.0.1:0", upstream)["listen"]
    if latency_toxic is not None:
        client.add_toxic(name, "latency", latency_toxic, name="bench-latency")
    return int(listen.rsplit(":", 1)[1])


def _print(result: dict) -> None:
    print(f"redis-benchmark -t get -c {result['clients']} -n {result['requests']}, "
          f"{result['rounds']} rounds each, alternating (medians); "
          f"load average before/after: {result['load_average'][0]} / {result['load_average'][1]}")
    if not result["fastpath_built"]:
        print("warning: the native fast path is not built (chaos.proxy._fastpath): 'kernel' and 'native' ran the Python path")
    elif not result["sockmap"]:
        print("warning: BPF sockmap is not available here (needs root / CAP_BPF+CAP_NET_ADMIN, Linux >= 5.13): "
              "'kernel' ran the epoll engine")
    print("clients reach the proxy over TCP; tcp/unix = how the proxy reaches Valkey; "
          "toxic/* = ours with one latency 0 ms toxic (the Python toxic path)")
    if result["toxiproxy_binary"]:
        print(f"toxiproxy = the real Toxiproxy ({result['toxiproxy_binary']}), TCP to Valkey; +toxic: the same latency 0 ms toxic")
    else:
        print("no real Toxiproxy found (chaos.toxiproxy_server): the comparison with it is left out")
    measured = [kind for kind in (*PROXY_KINDS, *TOXIC_KINDS, *TOXIPROXY_KINDS) if kind in result]
    print(f"{'':17}{'GET/s':>10}{'range':>20}{'p50 µs':>9}{'p99 µs':>9}{'ratio':>8}{'+p50 µs':>9}{'CPU µs/GET':>12}")
    for kind in ("direct", *measured):
        row = result[kind]
        spread = f"{row['rps_min']:,.0f}-{row['rps_max']:,.0f}"
        extra = f"{row['throughput_ratio']:>7.2f}x{row['added_p50_us']:>+9.0f}{row['cpu_us']:>12.1f}" if kind != "direct" else ""
        print(f"{kind:17}{row['rps']:>10,.0f}{spread:>20}{row['p50_us']:>9.0f}{row['p99_us']:>9.0f}{extra}")
    for kind in PROXY_KINDS:
        row = result[kind]
        low, high = row["throughput_ratio_range"]
        ok_ratio = "ok" if row["throughput_ratio"] >= GOAL_THROUGHPUT_RATIO else "below goal"
        ok_p50 = "ok" if row["added_p50_us"] < GOAL_ADDED_P50_US else "above goal"
        print(f"{kind}: proxied/direct throughput {row['throughput_ratio']:.2f}x (rounds {low:.2f}-{high:.2f}; "
              f"goal >= {GOAL_THROUGHPUT_RATIO}x: {ok_ratio}), added p50 {row['added_p50_us']:+.0f} µs "
              f"(goal < {GOAL_ADDED_P50_US:.0f}: {ok_p50})")
    for engine in ENGINES:
        tcp, unix = result[f"{engine}/tcp"], result[f"{engine}/unix"]
        print(f"{engine}: unix upstream vs TCP upstream: {unix['rps'] / tcp['rps']:.2f}x throughput, "
              f"ratio to direct {tcp['throughput_ratio']:.2f}x -> {unix['throughput_ratio']:.2f}x, "
              f"p50 {unix['p50_us'] - tcp['p50_us']:+.0f} µs")
    default_kind = result["default_kind"]
    row = result[default_kind]
    print(f"as the stack runs it ({default_kind}): {row['throughput_ratio']:.2f}x direct, {row['added_p50_us']:+.0f} µs p50")
    for kind, versus in result.get("vs_toxiproxy", {}).items():
        low, high = versus["range"]
        verdict = "ok" if versus["ratio"] >= versus["goal"] else "below goal"
        goal = f"goal >= {versus['goal']}x: {verdict}" if kind in (default_kind, *TOXIC_KINDS) else "no goal"
        print(f"{kind} vs {versus['against']}: {versus['ratio']:.2f}x GET/s (rounds {low:.2f}-{high:.2f}; {goal}), "
              f"p50 {versus['added_p50_us']:+.0f} µs, proxy CPU per GET {versus['cpu_ratio']:.2f}x")


def main(requests: int = 200_000, clients: int = 8) -> dict:
    return run_proxy_benchmark(requests=requests, clients=clients, rounds=5)
