"""noop: does nothing (useful to test the plumbing)."""

from __future__ import annotations

from cachestorm.chaos.proxy.toxics.base import Toxic


class NoopToxic(Toxic):
    type_name = "noop"
    go_struct = "NoopToxic"

    def process_now(self, link, state, data):
        return data
