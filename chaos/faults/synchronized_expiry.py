"""Many keys refilled at the same moment with equal TTLs (a bulk warm-up, a deploy, a restart
behind a warmer), so they all expire together `ttl_ms` later: the first wave. What the strategy
refills then expires one TTL later again: the second wave, synchronized unless fills are jittered
(the `jitter` protection must visibly lower its DB peak).

An entry in the targets' format keeps its value and gets the common logical expiry (its `x`) and
physical expiry; any other value only gets the physical one."""

from __future__ import annotations

from dataclasses import dataclass

from cachestorm.chaos.faults.base import Fault, SettingError

# ARGV[1] = the common expiry in wall seconds, ARGV[2] = the same in ms; returns keys refilled
REFILL_AT = """
local n = 0
for _, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if v then
    local refilled, found = string.gsub(v, '^{"x":[-+.e0-9]+', '{"x":' .. ARGV[1], 1)
    if found == 1 then redis.call('SET', key, refilled, 'PXAT', ARGV[2])
    else redis.call('PEXPIREAT', key, ARGV[2]) end
    n = n + 1
  end
end
return n
"""
BATCH = 500  # keys per script call: Redis stays responsive to the load meanwhile


@dataclass
class SynchronizedExpiry(Fault):
    name = "synchronized-expiry"
    summary = "refill many keys at one moment with the same TTL, so they all expire together"
    touches = ("redis",)
    one_shot = True

    pattern: str = ""       # "": "{domain}:*"
    ttl_ms: int = 1000
    max_keys: int = 100_000

    def validate(self) -> None:
        if self.ttl_ms < 1:
            raise SettingError(f"fault {self.name!r}: ttl_ms must be >= 1", "ttl_ms")

    def _apply(self) -> dict:
        pattern = self.pattern or self.context.redis_key("*")
        client = self.redis_admin()
        try:
            keys = []
            for seen, key in enumerate(client.scan_iter(match=pattern, count=1000)):
                if seen >= self.max_keys:
                    break
                if not key.endswith((":lock", ":lease")):
                    keys.append(key)
            # one absolute instant from Redis' clock, so keys refilled late in the loop expire together too
            seconds, micros = client.time()
            expire_at = int(seconds) * 1000 + int(micros) // 1000 + self.ttl_ms
            changed = sum(client.eval(REFILL_AT, len(batch), *batch, repr(expire_at / 1000), str(expire_at))
                          for batch in (keys[i:i + BATCH] for i in range(0, len(keys), BATCH)))
        finally:
            client.close()
        return {"keys": changed, "pattern": pattern, "expire_at_ms": expire_at, "wave_in_s": self.ttl_ms / 1000}

    def touched(self, applied: dict, reverted: dict) -> dict | None:
        return {"count": applied["keys"], "unit": "keys refilled to expire together",
                "source": "Redis (keys found and changed)", "why": f"no key matched {applied['pattern']!r}"}
