"""Protections that compose with any caching strategy (`--strategy NAME+PROTECTION...`).
Adding one = one file + one line in PROTECTIONS."""

from __future__ import annotations

from cachestorm.core import plugins

# name -> "module:Class"
PROTECTIONS: dict[str, str] = plugins.registry("protection", {
    "coalescing": "cachestorm.targets.protections.coalescing:Coalescing",
    "lock": "cachestorm.targets.protections.lock:Lock",
    "lease": "cachestorm.targets.protections.lease:Lease",
    "jitter": "cachestorm.targets.protections.jitter:Jitter",
    "negative": "cachestorm.targets.protections.negative:Negative",
    "xfetch": "cachestorm.targets.protections.xfetch:XFetch",
    "stale-if-error": "cachestorm.targets.protections.stale_if_error:StaleIfError",
})
