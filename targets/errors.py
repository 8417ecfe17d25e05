"""Why a target could not answer: the kind goes into the 503 body as {"error": kind}."""

from __future__ import annotations

POOL_TIMEOUT = "pool_timeout"
DB_UNAVAILABLE = "db_unavailable"
CACHE_UNAVAILABLE = "cache_unavailable"


class TargetError(Exception):
    """The service cannot answer this request; `kind` names the cause for the client."""

    def __init__(self, kind: str, detail: str = "", status: int = 503):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail
        self.status = status


class CacheUnavailable(Exception):
    """Redis failed, timed out, or the circuit breaker is open. Callers decide how to degrade."""
