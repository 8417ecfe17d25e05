"""Expire the top-N hot keys at once: the classic stampede trigger.

Hot keys come from the traffic model (ids 1..N are the hottest, Redis key `{domain}:{id}`) or,
with `source: lfu`, from Redis itself: the N keys with the highest OBJECT FREQ over a SCAN.
"""

from __future__ import annotations

from dataclasses import dataclass

from chaos.faults.base import Fault, SettingError
from chaos.faults.lfu import top_keys_by_frequency


@dataclass
class HotKeyExpiry(Fault):
    name = "hot-key-expiry"
    summary = "delete the top-N hot keys at the same moment (ids 1..N, or by LFU frequency)"
    touches = ("redis",)
    one_shot = True

    count: int = 0          # 0: the context's hot_keys (default 10)
    domain: str = ""        # "": the context's domain
    source: str = "model"   # model | lfu
    scan_limit: int = 100_000

    def validate(self) -> None:
        if self.source not in ("model", "lfu"):
            raise SettingError(f"fault {self.name!r}: source must be 'model' or 'lfu', got {self.source!r}",
                               "source")
        if self.count < 0:
            raise SettingError(f"fault {self.name!r}: count must be >= 0", "count")

    def _apply(self) -> dict:
        count = self.count or self.context.hot_keys
        domain = self.domain or self.context.domain
        client = self.redis_admin()
        try:
            if self.source == "lfu":
                keys = top_keys_by_frequency(client, f"{domain}:*", count, self.scan_limit)
            else:
                keys = [f"{domain}:{key_id}" for key_id in range(1, count + 1)]
            deleted = client.delete(*keys) if keys else 0
        finally:
            client.close()
        return {"keys": int(deleted), "key_ids": [k.split(":", 1)[1] for k in keys], "source": self.source}
