"""Expire every key matching a pattern (SCAN + UNLINK)."""

from __future__ import annotations

from dataclasses import dataclass

from cachestorm.chaos.faults.base import Fault


@dataclass
class KeyPatternExpiry(Fault):
    name = "key-pattern-expiry"
    summary = "delete every key matching a pattern (default '{domain}:*')"
    touches = ("redis",)
    one_shot = True

    pattern: str = ""       # "": "{domain}:*"
    max_keys: int = 1_000_000

    def _apply(self) -> dict:
        pattern = self.pattern or self.context.redis_key("*")
        client = self.redis_admin()
        deleted = 0
        try:
            batch: list[str] = []
            for seen, key in enumerate(client.scan_iter(match=pattern, count=1000)):
                if seen >= self.max_keys:
                    break
                batch.append(key)
                if len(batch) >= 500:
                    deleted += client.unlink(*batch)
                    batch = []
            if batch:
                deleted += client.unlink(*batch)
        finally:
            client.close()
        return {"keys": int(deleted), "pattern": pattern}

    def touched(self, applied: dict, reverted: dict) -> dict | None:
        return {"count": applied["keys"], "unit": "keys deleted", "source": "Redis (UNLINK's count)",
                "why": f"no key matched {applied['pattern']!r}"}
