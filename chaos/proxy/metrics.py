"""Prometheus text for the proxies' counters (GET /metrics on the API server)."""

from __future__ import annotations

from collections.abc import Iterable


def render(proxies: Iterable) -> str:
    lines = []

    def family(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{{{labels}}} {value}" for labels, value in samples)

    proxies = list(proxies)
    family("cachestorm_proxy_connections_total", "counter", "Connections accepted.",
           [(f'proxy="{p.name}"', p.stats.connections_total) for p in proxies])  # fmt: skip
    family("cachestorm_proxy_connections_active", "gauge", "Connections open now.",
           [(f'proxy="{p.name}"', len(p.connections)) for p in proxies])  # fmt: skip
    moved = [(p, *p.bytes_moved()) for p in proxies]
    family("cachestorm_proxy_bytes_total", "counter", "Bytes read from each side (upstream = client to server).",
           [(f'proxy="{p.name}",direction="upstream"', up) for p, up, _ in moved]
           + [(f'proxy="{p.name}",direction="downstream"', down) for p, _, down in moved])  # fmt: skip
    family("cachestorm_proxy_toxics_applied_total", "counter", "Connections a toxic applied to, by toxic type.",
           [(f'proxy="{p.name}",type="{t}"', n) for p in proxies for t, n in sorted(p.stats.toxics_applied.items())])  # fmt: skip
    family("cachestorm_proxy_toxics_active", "gauge", "Toxics configured now.",
           [(f'proxy="{p.name}"', len(p.toxics)) for p in proxies])  # fmt: skip
    family("cachestorm_proxy_writes_failed_total", "counter", "Redis writes failed or dropped by redis_write_fail.",
           [(f'proxy="{p.name}"', p.stats.writes_failed) for p in proxies])  # fmt: skip
    family("cachestorm_proxy_commands_faulted_total", "counter", "Redis commands delayed or answered by a RESP-aware toxic, by toxic type.",
           [(f'proxy="{p.name}",type="{t}"', n) for p in proxies for t, n in sorted(p.stats.commands_faulted.items())])  # fmt: skip
    family("cachestorm_proxy_enabled", "gauge", "1 if the proxy is listening.",
           [(f'proxy="{p.name}"', int(p.enabled)) for p in proxies])  # fmt: skip
    return "\n".join(lines) + "\n"
