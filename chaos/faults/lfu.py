"""Finding hot keys in Redis by LFU frequency (OBJECT FREQ needs an LFU maxmemory-policy)."""

from __future__ import annotations

from cachestorm.core.errors import CachestormError


def top_keys_by_frequency(client, pattern: str, count: int, scan_limit: int) -> list[str]:
    policy = client.config_get("maxmemory-policy").get("maxmemory-policy", "")
    if "lfu" not in policy:
        raise CachestormError(f"finding hot keys by frequency needs an LFU policy (maxmemory-policy is "
                              f"{policy!r}); add the fault 'lfu-tracking' from the start of the run")
    frequencies: list[tuple[int, str]] = []
    for seen, key in enumerate(client.scan_iter(match=pattern, count=1000)):
        if seen >= scan_limit:
            break
        try:
            frequencies.append((int(client.object("freq", key)), key))
        except Exception:  # noqa: BLE001 - the key expired between SCAN and OBJECT
            continue
    frequencies.sort(key=lambda item: (-item[0], item[1]))
    return [key for _freq, key in frequencies[:count]]
