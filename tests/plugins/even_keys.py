"""even (a test plug-in key model): uniform over the even key ids 2, 4, ..., so a test can see who chose."""

from __future__ import annotations

import random


class EvenKeys:
    def __init__(self, keys: int, seed: int | None = None):
        self.keys = keys
        self.rng = random.Random(seed)

    @classmethod
    def from_options(cls, keys: int, options, seed: int | None) -> EvenKeys:
        return cls(keys, seed)

    def __call__(self) -> int:
        return 2 * self.rng.randint(1, self.keys // 2)

    def pmf(self, key: int) -> float:
        return 1.0 / (self.keys // 2) if key % 2 == 0 and 2 <= key <= self.keys else 0.0
