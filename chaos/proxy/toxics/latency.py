"""latency: delay each chunk by `latency` ms ± `jitter` ms, counted from the chunk's timestamp."""

from __future__ import annotations

import random

from cachestorm.chaos.proxy.toxics.base import NOT_NOW, Toxic


class LatencyToxic(Toxic):
    type_name = "latency"
    go_struct = "LatencyToxic"
    fields = {"latency": (int, 0), "jitter": (int, 0)}

    def process_now(self, link, state, data):
        if self.attrs["jitter"]:
            return NOT_NOW  # drawn once, in process
        deadline = link.arrival + self.attrs["latency"] / 1000.0
        if deadline > link.loop.time():
            return NOT_NOW
        link.arrival = deadline  # as process does: stacked latencies add up
        return data

    async def process(self, link, state, data, emit):
        delay_ms = self.attrs["latency"]
        jitter = self.attrs["jitter"]
        if jitter:
            delay_ms += random.randint(-jitter, jitter)
        # An absolute deadline from the chunk's timestamp (its arrival): chunks queued behind a slow
        # one are not delayed twice. Like Toxiproxy, the toxic moves the timestamp to its deadline,
        # so stacked latency toxics add up; restored after, for the next piece of a sliced chunk.
        arrival = link.arrival
        deadline = arrival + delay_ms / 1000.0
        await link.sleep_until(deadline, self)
        link.arrival = deadline
        try:
            await emit(data)
        finally:
            link.arrival = arrival
