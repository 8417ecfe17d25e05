"""Expire the top-N hot keys at once: the classic stampede trigger.

`mode: expire` (default) makes each entry reach the end of its TTL now, the way the strategy's own
TTL would: its logical expiry (the entry's `x`) becomes now and the value stays in Redis for as long
as it would, so stale-while-revalidate serves it stale while one refresh runs, and every other
strategy misses. `mode: evict` deletes the keys (an eviction or an invalidation), so nobody can
serve them stale. A value not in the targets' entry format is deleted in both modes.

Hot keys come from the traffic model (ids 1..N are the hottest, at the domain's Redis keys) or,
with `source: lfu`, from Redis itself: the N keys with the highest OBJECT FREQ over a SCAN.
"""

from __future__ import annotations

from dataclasses import dataclass

from cachestorm.chaos.faults.base import Fault, SettingError

from cachestorm.core.domains import redis_key
from cachestorm.core.errors import CachestormError

MODES = ("expire", "evict")
# the entry's logical expiry set to ARGV[1] in place (its TTL and the rest of the JSON untouched);
# not an entry of ours: deleted. Returns how many keys were expired or deleted.
EXPIRE_NOW = """
local n = 0
for _, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if v then
    local expired, found = string.gsub(v, '^{"x":[-+.e0-9]+', '{"x":' .. ARGV[1], 1)
    if found == 1 then redis.call('SET', key, expired, 'KEEPTTL') else redis.call('DEL', key) end
    n = n + 1
  end
end
return n
"""


@dataclass
class HotKeyExpiry(Fault):
    name = "hot-key-expiry"
    summary = "expire (or, mode: evict, delete) the top-N hot keys at the same moment (ids 1..N, or by LFU frequency)"
    touches = ("redis",)
    one_shot = True

    count: int = 0          # 0: the context's hot_keys (default 10)
    domain: str = ""        # "": the context's domain (or a key prefix of your own)
    source: str = "model"   # model | lfu
    mode: str = "expire"    # expire: stale now, as its TTL would make it | evict: deleted
    scan_limit: int = 100_000

    def validate(self) -> None:
        if self.source not in ("model", "lfu"):
            raise SettingError(f"fault {self.name!r}: source must be 'model' or 'lfu', got {self.source!r}",
                               "source")
        if self.mode not in MODES:
            raise SettingError(f"fault {self.name!r}: mode must be 'expire' or 'evict', got {self.mode!r}", "mode")
        if self.count < 0:
            raise SettingError(f"fault {self.name!r}: count must be >= 0", "count")

    def _apply(self) -> dict:
        count = self.count or self.context.hot_keys
        domain = self.domain or self.context.domain
        client = self.redis_admin()
        try:
            if self.source == "lfu":
                keys = top_keys_by_frequency(client, redis_key(domain, "*"), count, self.scan_limit)
            else:
                keys = [redis_key(domain, key_id) for key_id in range(1, count + 1)]
            changed = self._expire(client, keys)
            why = "" if changed else self._why_nothing(client, domain, keys)
        finally:
            client.close()
        details = {"keys": changed, "key_ids": [k.split(":", 1)[1] for k in keys], "source": self.source,
                   "mode": self.mode}
        if why:
            details["why_nothing"] = why
        return details

    def _why_nothing(self, client, domain: str, keys: list[str]) -> str:
        """Why no key was expired, in words: the domain has no key at all, or not these ones."""
        run = getattr(self.context, "domain", "")
        if not keys:
            return f"no key of domain {domain} was found by {self.source}"
        if next(iter(client.scan_iter(match=redis_key(domain, "*"), count=1000)), None) is None:
            return f"domain {domain} has no keys" + (f" on a {run} run" if run and run != domain else " in Redis")
        shown = keys[0] if len(keys) == 1 else f"{keys[0]} .. {keys[-1]}"
        return f"none of its {len(keys)} hot keys ({shown}) was in the cache"

    def touched(self, applied: dict, reverted: dict) -> dict | None:
        keys = applied.get("keys")
        if not isinstance(keys, int):
            return None
        return {"count": keys, "unit": "keys expired" if self.mode == "expire" else "keys evicted",
                "source": "Redis (keys found and changed)", "why": applied.get("why_nothing", "")}

    def _expire(self, client, keys: list[str]) -> int:
        """Expire (or evict) these keys now; how many there were."""
        if not keys:
            return 0
        if self.mode == "evict":
            return int(client.delete(*keys))
        seconds, micros = client.time()  # Redis' clock: the same for every key
        return int(client.eval(EXPIRE_NOW, len(keys), *keys, repr(int(seconds) + int(micros) / 1e6)))



# OBJECT FREQ needs an LFU maxmemory-policy (the fault 'lfu-tracking' sets one)
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
