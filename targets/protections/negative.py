"""negative: a key that does not exist is cached as absent for --negative-ttl seconds
(X-Cache: negative, 404), so repeated misses on it stop reaching the DB. An insert in that
window is not seen until the negative entry expires."""

from __future__ import annotations

from cachestorm.targets.protections.base import Protection


class Negative(Protection):
    name = "negative"
    caches_absence = True

    def __init__(self, service):
        super().__init__(service)
        self.absence_ttl = self.settings.negative_ttl
