"""Prometheus text for the proxies' counters (GET /metrics on the API server): cachestorm's
families, and Toxiproxy's own two (as `toxiproxy -proxy-metrics` serves them) so dashboards made
for Toxiproxy work. Toxiproxy adds a connection's bytes when it ends; ours count live ones too."""

from __future__ import annotations

from collections.abc import Iterable


class RetiredBytes:
    """Toxiproxy's byte counters of proxies deleted or replaced: Prometheus counters live on in
    Toxiproxy (a proxy made again with the same labels goes on counting), so ours do too."""

    def __init__(self):
        self.by_labels: dict[str, list[int]] = {}  # labels -> [received up, down, sent up, down]

    def add(self, proxy) -> None:
        if not proxy.stats.connections_total:
            return
        totals = self.by_labels.setdefault(_toxiproxy_labels(proxy), [0, 0, 0, 0])
        for index, value in enumerate((*proxy.bytes_moved(), *proxy.bytes_sent())):
            totals[index] += value


def render(proxies: Iterable, retired: RetiredBytes) -> str:
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
    totals = {labels: list(values) for labels, values in retired.by_labels.items()}
    for p in proxies:
        if not p.stats.connections_total:  # Toxiproxy has a series once a connection was counted
            continue
        row = totals.setdefault(_toxiproxy_labels(p), [0, 0, 0, 0])
        for index, value in enumerate((*p.bytes_moved(), *p.bytes_sent())):
            row[index] += value
    received = [(labels, row[0], row[1]) for labels, row in totals.items()]
    sent = [(labels, row[2], row[3]) for labels, row in totals.items()]
    for name, rows in (("toxiproxy_proxy_received_bytes_total", received), ("toxiproxy_proxy_sent_bytes_total", sent)):
        family(name, "counter", "", [(f'direction="{direction}",{labels}', value)
                                     for labels, up, down in rows for direction, value in (("downstream", down), ("upstream", up))])  # fmt: skip
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _toxiproxy_labels(proxy) -> str:
    """Toxiproxy's labels after `direction`, in the alphabetical order Prometheus writes them."""
    return f'listener="{_label(proxy.listen)}",proxy="{_label(proxy.name)}",upstream="{_label(proxy.upstream)}"'
