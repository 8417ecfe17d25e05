"""`cachestorm bench proxy`: Redis GETs direct vs through cachestorm's proxy (no toxics).

Starts a private Valkey (TCP and a Unix socket) and three proxy processes: `kernel` is the native
engine with toxic-free pairs forwarded in the kernel by BPF sockmap where available, `native` is the
engine's epoll thread only (CACHESTORM_PROXY_SOCKMAP=0) and `python` the Python path
(CACHESTORM_PROXY_FASTPATH=0). Each has proxies reaching Valkey over TCP loopback and over its Unix
socket (StackSettings.unix_upstreams); clients always reach the proxy over TCP. The stack runs
kernel/unix where sockmap is available, else native/unix.
Runs `redis-benchmark -t get -c C -n N --csv` against direct TCP and the six proxies, alternating
for several rounds so the shared machine's noise hits each alike. Prints throughput, p50/p99, the
ratios to direct and the load average (the machine is shared).
"""

from __future__ import annotations

import csv
import io
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

import httpx

from cachestorm.errors import CachestormError

REDIS_BENCHMARK = "/usr/bin/redis-benchmark"
GOAL_THROUGHPUT_RATIO = 0.6
GOAL_ADDED_P50_US = 90.0


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


def _load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def run_proxy_benchmark(requests: int = 200_000, clients: int = 8, rounds: int = 3) -> dict:
    """Direct vs our proxy with the native fast path vs our proxy forwarding in Python, alternating."""
    from cachestorm.stack.servers import start_redis
    from chaos.proxy.process import spawn
    from chaos.toxiproxy import ToxiproxyClient

    binary = _redis_benchmark_binary()
    workdir = tempfile.mkdtemp(prefix="cachestorm-bench-proxy-")
    valkey = start_redis(workdir, unix_socket=True)
    proxies = []
    fastpath_built = sockmap = False
    load_before = _load_average()
    try:
        upstream_tcp = valkey.url.split("//")[1].split("/")[0]
        upstreams = {"tcp": upstream_tcp, "unix": f"unix:{valkey.extra['unix_socket']}"}
        ports = {"direct": int(upstream_tcp.rsplit(":", 1)[1])}
        for engine, env in ENGINES.items():
            process = spawn(env=env)
            proxies.append(process)
            if engine == "kernel":
                version = httpx.get(f"{process.api_url}/version", trust_env=False).json()
                fastpath_built, sockmap = bool(version.get("fastpath")), bool(version.get("sockmap"))
            with ToxiproxyClient(process.api_url) as client:
                for name, upstream in upstreams.items():
                    listen = client.create_proxy(f"bench-{name}", "127.0.0.1:0", upstream)["listen"]
                    ports[f"{engine}/{name}"] = int(listen.rsplit(":", 1)[1])
        subprocess.run([binary, "-p", str(ports["direct"]), "-t", "set", "-n", "1000", "-q"], capture_output=True)
        for kind in ports:  # warm-up
            _run_round(binary, ports[kind], max(requests // 10, 1000), clients)
        samples: dict[str, list[dict[str, float]]] = {kind: [] for kind in ports}
        kinds = list(ports)
        for index in range(rounds):
            order = kinds if index % 2 == 0 else kinds[::-1]
            for kind in order:
                samples[kind].append(_run_round(binary, ports[kind], requests, clients))
    finally:
        for process in proxies:
            process.stop()
        valkey.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    def summary(kind: str) -> dict[str, float]:
        rows = samples[kind]
        return {key: statistics.median(r[key] for r in rows) for key in ("rps", "p50_us", "p99_us")} | {
            "rps_min": min(r["rps"] for r in rows),
            "rps_max": max(r["rps"] for r in rows),
        }

    result: dict = {
        "requests": requests,
        "clients": clients,
        "rounds": rounds,
        "fastpath_built": fastpath_built,
        "sockmap": sockmap,
        "load_average": [load_before, _load_average()],
    }
    direct = result["direct"] = summary("direct")
    for kind in PROXY_KINDS:
        row = result[kind] = summary(kind)
        per_round = [p["rps"] / d["rps"] for d, p in zip(samples["direct"], samples[kind], strict=True)]
        row["throughput_ratio"] = row["rps"] / direct["rps"]
        row["throughput_ratio_range"] = [min(per_round), max(per_round)]
        row["added_p50_us"] = row["p50_us"] - direct["p50_us"]
        row["added_p99_us"] = row["p99_us"] - direct["p99_us"]
    _print(result)
    return result


def _print(result: dict) -> None:
    print(f"redis-benchmark -t get -c {result['clients']} -n {result['requests']}, "
          f"{result['rounds']} rounds each, alternating (medians); "
          f"load average before/after: {result['load_average'][0]} / {result['load_average'][1]}")
    if not result["fastpath_built"]:
        print("warning: the native fast path is not built (chaos.proxy._fastpath): 'kernel' and 'native' ran the Python path")
    elif not result["sockmap"]:
        print("warning: BPF sockmap is not available here (needs root / CAP_BPF+CAP_NET_ADMIN, Linux >= 5.13): "
              "'kernel' ran the epoll engine")
    print("clients reach the proxy over TCP; tcp/unix = how the proxy reaches Valkey")
    print(f"{'':13}{'GET/s':>10}{'range':>20}{'p50 µs':>9}{'p99 µs':>9}{'ratio':>8}{'+p50 µs':>9}")
    for kind in ("direct", *PROXY_KINDS):
        row = result[kind]
        spread = f"{row['rps_min']:,.0f}-{row['rps_max']:,.0f}"
        extra = f"{row['throughput_ratio']:>7.2f}x{row['added_p50_us']:>+9.0f}" if kind != "direct" else ""
        print(f"{kind:13}{row['rps']:>10,.0f}{spread:>20}{row['p50_us']:>9.0f}{row['p99_us']:>9.0f}{extra}")
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
    default_kind = "kernel/unix" if result["sockmap"] else "native/unix"  # StackSettings.unix_upstreams
    row = result[default_kind]
    print(f"as the stack runs it ({default_kind}): {row['throughput_ratio']:.2f}x direct, {row['added_p50_us']:+.0f} µs p50; "
          "real Toxiproxy 2.12 on this machine (reference): 0.47x, +90 µs p50")


def main(requests: int = 200_000, clients: int = 8) -> dict:
    return run_proxy_benchmark(requests=requests, clients=clients, rounds=5)
