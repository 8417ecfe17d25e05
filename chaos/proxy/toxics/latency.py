"""latency: delay each chunk by `latency` ms ± `jitter` ms, counted from when it arrived."""

from __future__ import annotations

import random

from chaos.proxy.toxics.base import Toxic


class LatencyToxic(Toxic):
    type_name = "latency"
    go_struct = "LatencyToxic"
    fields = {"latency": (int, 0), "jitter": (int, 0)}

    async def process(self, link, state, data, emit):
        delay_ms = self.attrs["latency"]
        jitter = self.attrs["jitter"]
        if jitter:
            delay_ms += random.randint(-jitter, jitter)
        # Absolute deadline from arrival: chunks queued behind a slow one are not delayed twice.
        await link.sleep_until(link.arrival + delay_ms / 1000.0, self)
        await emit(data)
