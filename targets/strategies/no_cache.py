"""no-cache: the baseline. Every read goes to PostgreSQL (X-Cache: bypass)."""

from __future__ import annotations

from cachestorm.targets.strategies.base import Change, Key, Loader, ReadResult


class NoCache:
    name = "no-cache"

    def __init__(self, service, protections):
        self.service = service

    def staleness_bound_s(self) -> float:
        return 0.0  # every read is the database's answer

    async def read(self, key: Key, loader: Loader) -> ReadResult:
        return ReadResult(await loader(), "bypass")

    async def write(self, key: Key, change: Change) -> dict | None:
        return await change.commit()

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass
