"""Caching strategies, picked by name. Adding one = one file + one line in STRATEGIES."""

from __future__ import annotations

from cachestorm.core import plugins
from cachestorm.core.errors import CachestormError

# name -> "module:Class"
STRATEGIES: dict[str, str] = plugins.registry("strategy", {
    "no-cache": "cachestorm.targets.strategies.no_cache:NoCache",
    "cache-aside": "cachestorm.targets.strategies.cache_aside:CacheAside",
    "read-through": "cachestorm.targets.strategies.read_through:ReadThrough",
    "write-through": "cachestorm.targets.strategies.write_through:WriteThrough",
    "write-behind": "cachestorm.targets.strategies.write_behind:WriteBehind",
    "invalidate-on-write": "cachestorm.targets.strategies.invalidate_on_write:InvalidateOnWrite",
    "stale-while-revalidate": "cachestorm.targets.strategies.stale_while_revalidate:StaleWhileRevalidate",
})


def parse_spec(spec: str) -> tuple[str, list[str]]:
    """'read-through+lease+jitter' -> ('read-through', ['lease', 'jitter']); raises on unknown names."""
    from cachestorm.targets.protections import PROTECTIONS

    name, *protections = [part.strip() for part in spec.split("+")]
    if name not in STRATEGIES:
        raise CachestormError(f"unknown strategy {name!r} in --strategy {spec!r}; choose one of "
                              f"{', '.join(STRATEGIES)} (or 'default')")
    for protection in protections:
        if protection not in PROTECTIONS:
            raise CachestormError(f"unknown protection {protection!r} in --strategy {spec!r}; choose from "
                                  f"{', '.join(PROTECTIONS)}")
    if len(set(protections)) != len(protections):
        raise CachestormError(f"--strategy {spec!r} names a protection twice")
    if protections and name == "no-cache":
        raise CachestormError(f"--strategy {spec!r}: protections need a caching strategy, not no-cache")
    plugins.load(STRATEGIES[name], "strategy")  # a broken plug-in fails here, before anything starts
    for protection in protections:
        plugins.load(PROTECTIONS[protection], "protection")
    return name, protections


# CI only (scripts/gate-check.sh): a deliberately broken build, the named protections doing nothing,
# to prove the gate fails it. Not a user feature: the spec and the report still name the protection.
BROKEN_PROTECTIONS_ENV = "CACHESTORM_TEST_BROKEN_PROTECTIONS"
BROKEN_PROTECTION = "cachestorm.targets.testing:BrokenProtection"


def build_strategy(spec: str, service):
    import os

    from cachestorm.targets.protections import PROTECTIONS

    name, protection_names = parse_spec(spec)
    broken = set(os.environ.get(BROKEN_PROTECTIONS_ENV, "").split(","))
    protections = [plugins.load(BROKEN_PROTECTION if p in broken else PROTECTIONS[p], "protection")(service)
                   for p in protection_names]
    return plugins.load(STRATEGIES[name], "strategy")(service, protections)
