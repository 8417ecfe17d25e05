"""Protections that compose with any caching strategy (`--strategy NAME+PROTECTION...`).
Adding one = one file + one line in PROTECTIONS."""

from __future__ import annotations

# name -> "module:Class"
PROTECTIONS: dict[str, str] = {
    "coalescing": "targets.protections.coalescing:Coalescing",
    "lock": "targets.protections.lock:Lock",
    "lease": "targets.protections.lease:Lease",
    "jitter": "targets.protections.jitter:Jitter",
    "negative": "targets.protections.negative:Negative",
    "xfetch": "targets.protections.xfetch:XFetch",
    "stale-if-error": "targets.protections.stale_if_error:StaleIfError",
}
