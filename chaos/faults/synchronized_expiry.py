"""Many keys expire at the same moment: the same short TTL set on all of them in one pipeline."""

from __future__ import annotations

from dataclasses import dataclass

from chaos.faults.base import Fault, SettingError


@dataclass
class SynchronizedExpiry(Fault):
    name = "synchronized-expiry"
    summary = "set the same short TTL on many keys so they all expire together"
    touches = ("redis",)
    one_shot = True

    pattern: str = ""       # "": "{domain}:*"
    ttl_ms: int = 1000
    max_keys: int = 100_000

    def validate(self) -> None:
        if self.ttl_ms < 1:
            raise SettingError(f"fault {self.name!r}: ttl_ms must be >= 1", "ttl_ms")

    def _apply(self) -> dict:
        pattern = self.pattern or f"{self.context.domain}:*"
        client = self.redis_admin()
        try:
            keys = []
            for seen, key in enumerate(client.scan_iter(match=pattern, count=1000)):
                if seen >= self.max_keys:
                    break
                keys.append(key)
            # PEXPIREAT to one absolute instant, so keys set late in the pipeline expire together too
            seconds, micros = client.time()
            now_ms = int(seconds) * 1000 + int(micros) // 1000
            expire_at = now_ms + self.ttl_ms
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.pexpireat(key, expire_at)
            changed = sum(1 for ok in pipe.execute() if ok)
        finally:
            client.close()
        return {"keys": changed, "pattern": pattern, "expire_at_ms": expire_at}
