"""What a fault needs to know about the world: where Redis, PostgreSQL and the proxy are, the targets.

The conductor builds one `ChaosContext` per run; the CLI builds one from `cachestorm up`'s state.
Only the plain fields (no callbacks) are written to the fault ledger, so `chaos heal` can revert
a fault without the process that applied it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from cachestorm.core.defaults import DEFAULTS
from cachestorm.core.domains import redis_key
from cachestorm.core.errors import CachestormError
from cachestorm.core.urls import is_loopback, redact

DEFAULT_LEDGER = Path(".cachestorm") / "active-faults.jsonl"
DEFAULT_CHAOS_RUNS = Path(".cachestorm") / "chaos"  # run folders of chaos runs without a --run-dir


@dataclass
class TargetHandle:
    """One running target instance; `restart` (from the conductor) starts it again after a kill."""

    name: str
    pid: int | None = None
    base_url: str = ""
    restart: Callable[[], object] | None = None


@dataclass
class ChaosContext:
    redis_url: str = ""            # direct, for admin commands
    postgres_url: str = ""         # direct
    proxy_api_url: str = ""
    redis_proxy: str = "redis"     # proxy names on the Toxiproxy API
    postgres_proxy: str = "postgres"
    domain: str = DEFAULTS.domain  # whose Redis keys faults touch (cachestorm/core/domains.py), or a key prefix
    hot_keys: int = DEFAULTS.hot_keys
    key_space: int = DEFAULTS.keys
    targets: list[TargetHandle] = field(default_factory=list)
    restart_redis: Callable[[], object] | None = None
    run_dir: str | None = None
    ledger_path: str | Path = DEFAULT_LEDGER
    allow_remote: bool = False
    t0_monotonic: float | None = None   # timeline origin; None = the runner's start time
    redis_admin_auth: tuple[str, str] | None = None   # set while an ACL fault restricts `default`

    def redis_key(self, key_id: int | str) -> str:
        """The domain's Redis key of row `key_id` ("*": the pattern of every row's key)."""
        return redis_key(self.domain, key_id)

    def proxy_name(self, which: str) -> str:
        """"redis" / "postgres" name the stack's proxies; anything else is a proxy name as is."""
        return {"redis": self.redis_proxy, "postgres": self.postgres_proxy}.get(which, which)

    def plain(self) -> dict:
        """The fields a ledger entry keeps (no callbacks, no targets' restart functions)."""
        return {"redis_url": self.redis_url, "postgres_url": self.postgres_url,
                "proxy_api_url": self.proxy_api_url, "redis_proxy": self.redis_proxy,
                "postgres_proxy": self.postgres_proxy, "domain": self.domain,
                "hot_keys": self.hot_keys, "key_space": self.key_space,
                "allow_remote": self.allow_remote,
                "targets": [{"name": t.name, "pid": t.pid, "base_url": t.base_url} for t in self.targets]}

    @classmethod
    def from_plain(cls, data: dict, ledger_path: str | Path = DEFAULT_LEDGER) -> ChaosContext:
        targets = [TargetHandle(t["name"], t.get("pid"), t.get("base_url", "")) for t in data.get("targets", [])]
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "targets"}
        return cls(**known, targets=targets, ledger_path=ledger_path)

    def check_local(self, url: str, what: str) -> None:
        """Refuse an address that is not this host unless `allow_remote`."""
        if not url or self.allow_remote:
            return
        host = urlsplit(url).hostname or ""
        if not is_loopback(host):
            raise CachestormError(f"{what} {redact(url)} is not a loopback address; chaos refuses to touch remote "
                                  "hosts unless allowed (--allow-remote / ChaosContext.allow_remote=True)")




def remote_addresses(ctx: ChaosContext) -> list[str]:
    """The context's URLs that are not on this host (a game day asks before touching them)."""
    urls = [ctx.redis_url, ctx.postgres_url, ctx.proxy_api_url] + [t.base_url for t in ctx.targets]
    return [url for url in urls if url and not is_loopback(urlsplit(url).hostname or "")]
