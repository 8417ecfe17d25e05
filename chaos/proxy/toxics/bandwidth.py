"""bandwidth: throttle to `rate` KB/s (1 KB = 1000 bytes, as Toxiproxy); 0 = unlimited."""

from __future__ import annotations

from cachestorm.chaos.proxy.toxics.base import Toxic


class _State:
    def __init__(self):
        self.next_free = 0.0  # loop time when the pipe is free again


class BandwidthToxic(Toxic):
    type_name = "bandwidth"
    go_struct = "BandwidthToxic"
    fields = {"rate": (int, 0)}

    def new_state(self):
        return _State()

    async def process(self, link, state, data, emit):
        rate = self.attrs["rate"]
        if rate <= 0:
            await emit(data)
            return
        bytes_per_s = rate * 1000.0
        piece = max(1, rate * 100)  # at most 100 ms worth per write, like Toxiproxy
        view = memoryview(data)
        for start in range(0, len(data), piece):
            part = bytes(view[start : start + piece])
            state.next_free = max(state.next_free, link.now()) + len(part) / bytes_per_s
            await link.sleep_until(state.next_free, self)
            await emit(part)
