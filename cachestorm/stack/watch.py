"""Notice, during a run, that a part of the stack itself is gone (not faulted: gone).

Faults act on the proxies, so the direct URLs of Redis and PostgreSQL and the proxy's API must keep
answering through any experiment. A part that stops answering for `GRACE_S` (a Redis restart takes
well under a second) was lost: killed, or stopped by `cachestorm down` from another terminal. The run
then ends as failed instead of measuring an outage nobody asked for.
"""

from __future__ import annotations

import time

from cachestorm.core.errors import CachestormError

GRACE_S = 3.0
CHECK_EVERY_S = 1.0


class DependencyWatch:
    def __init__(self, stack, grace_s: float = GRACE_S):
        self.stack = stack
        self.grace_s = grace_s
        self._down_since: dict[str, float] = {}
        self._next_check = 0.0

    def check(self) -> None:
        """Raise CachestormError once a part has not answered for the grace period; cheap between checks."""
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + CHECK_EVERY_S
        for name, probe in (("Redis", self._redis), ("PostgreSQL", self._postgres), ("the chaos proxy", self._proxy)):
            error = _attempt(probe)
            if error is None:
                self._down_since.pop(name, None)
                continue
            since = self._down_since.setdefault(name, now)
            if now - since >= self.grace_s:
                raise CachestormError(f"lost a dependency: {name} stopped answering for {now - since:.0f} s "
                                      f"during the run ({error}); it was stopped or died outside the experiment")

    def _redis(self) -> None:
        import redis

        client = redis.Redis.from_url(self.stack.redis_url, socket_connect_timeout=1, socket_timeout=1)
        try:
            client.ping()
        finally:
            client.close()

    def _postgres(self) -> None:
        # libpq's ping: the server answers and accepts connections, without logging in or running a
        # transaction (a SELECT each second would show in pg_stat_database beside the targets' queries)
        from psycopg import conninfo, pq

        params = conninfo.conninfo_to_dict(self.stack.postgres_url)
        params["connect_timeout"] = 2
        result = pq.PGconn.ping(conninfo.make_conninfo(**params).encode())
        if result != pq.Ping.OK:
            raise ConnectionError(f"PostgreSQL ping: {pq.Ping(result).name}")

    def _proxy(self) -> None:
        import httpx

        httpx.get(f"{self.stack.proxy_api_url.rstrip('/')}/version", timeout=1).raise_for_status()


def _attempt(probe) -> str | None:
    try:
        probe()
    except Exception as exc:  # noqa: BLE001 - any failure to answer counts
        text = str(exc).strip().splitlines()
        return f"{exc.__class__.__name__}: {text[0][:120]}" if text else exc.__class__.__name__
    return None
