"""Invalidations are lost: DEL/UNLINK fail after the DB write (redis_write_fail on deletes only)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cachestorm.chaos.faults.redis_write_fail import RedisWriteFail


@dataclass
class CacheDeleteFail(RedisWriteFail):
    name = "cache-delete-fail"
    summary = "redis_write_fail on DEL/UNLINK only: invalidations after DB writes are lost"

    commands: list[str] = field(default_factory=lambda: ["DEL", "UNLINK"])
