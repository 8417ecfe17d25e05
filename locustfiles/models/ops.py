"""Operation mixes: a factory returning a callable that draws the next operation.

Mixes are written in generic operations, which each domain maps to its HTTP calls
(locustfiles/<domain>.py):
- ``read``  : a lookup (profiles/catalog GET, counters GET, permissions check)
- ``write`` : an update (profiles/catalog PUT, counters incr, permissions grant or revoke 50:50)
- ``delete``: profiles/catalog DELETE, permissions revoke (counters: none)
- ``rmw``   : read-modify-write, a read then a write of the same key (YCSB F)
- ``scan``  : reads of 1..10 consecutive ids (YCSB E; the target API has no range query)
"""

from __future__ import annotations

import random
from bisect import bisect_right
from itertools import accumulate

from cachestorm.core.domains import DOMAINS
from cachestorm.core.errors import CachestormError

GENERIC_OPS = ("read", "write", "delete", "rmw", "scan")


class Mix:
    """Draws an operation name with the given weights (normalised)."""

    def __init__(self, weights: dict[str, float], seed: int | None = None):
        unknown = sorted(set(weights) - set(GENERIC_OPS))
        if unknown:
            raise CachestormError(f"operation mix names unknown operations {unknown}; use {', '.join(GENERIC_OPS)}")
        if any(w < 0 for w in weights.values()):
            raise CachestormError(f"operation mix weights must be >= 0 (got {weights})")
        items = [(op, w) for op, w in weights.items() if w > 0]
        total = sum(w for _, w in items)
        if not items or total <= 0:
            raise CachestormError("operation mix is empty: give at least one operation a weight > 0")
        self.ops = [op for op, _ in items]
        self.probabilities = {op: w / total for op, w in items}
        self.cumulative = list(accumulate(w / total for _, w in items))
        self.cumulative[-1] = 1.0
        self.rng = random.Random(seed)

    def __call__(self) -> str:
        return self.ops[bisect_right(self.cumulative, self.rng.random())]


def mix(seed: int | None = None, **weights: float) -> Mix:
    """``mix(read=0.95, write=0.05)``, like locust's ``between(a, b)``: returns the drawing callable."""
    return Mix(weights, seed)


def domain_mix(domain: str, write_ratio: float | None = None, delete_ratio: float = 0.0, seed: int | None = None) -> Mix:
    """The read/write/delete mix for a domain; ``write_ratio`` None means the domain's default."""
    if domain not in DOMAINS:
        raise CachestormError(f"domain {domain!r} is unknown; choose one of {', '.join(DOMAINS)}")
    if write_ratio is None:
        write_ratio = DOMAINS[domain].write_ratio  # production-like: profiles and catalogs are read-mostly
    for name, value in (("--write-ratio", write_ratio), ("--delete-ratio", delete_ratio)):
        if not 0.0 <= value <= 1.0:
            raise CachestormError(f"{name} must be between 0 and 1 (got {value})")
    if delete_ratio and not DOMAINS[domain].has_delete:
        raise CachestormError(f"--delete-ratio: domain {domain} has no delete operation; use 0")
    if write_ratio + delete_ratio > 1.0:
        raise CachestormError(f"--write-ratio {write_ratio} + --delete-ratio {delete_ratio} exceed 1")
    return Mix({"read": 1.0 - write_ratio - delete_ratio, "write": write_ratio, "delete": delete_ratio}, seed)
