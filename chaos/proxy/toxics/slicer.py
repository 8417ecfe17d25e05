"""slicer: split each chunk into pieces of about `average_size` ± `size_variation` bytes,
`delay` µs apart (Toxiproxy's recursive halving, so pieces vary evenly)."""

from __future__ import annotations

import random

from cachestorm.chaos.proxy.toxics.base import Toxic


class SlicerToxic(Toxic):
    type_name = "slicer"
    go_struct = "SlicerToxic"
    fields = {"average_size": (int, 0), "size_variation": (int, 0), "delay": (int, 0)}

    def cut_points(self, size: int) -> list[tuple[int, int]]:
        average = self.attrs["average_size"]
        variation = min(self.attrs["size_variation"], max(average - 1, 0))
        pieces: list[tuple[int, int]] = []
        stack = [(0, size)]
        while stack:
            start, end = stack.pop()
            if (end - start) - average <= variation:
                pieces.append((start, end))
                continue
            mid = start + (end - start) // 2
            if variation:
                mid += random.randint(-variation, variation)
            mid = min(max(mid, start + 1), end - 1)
            stack.append((mid, end))
            stack.append((start, mid))
        return pieces

    async def process(self, link, state, data, emit):
        if self.attrs["average_size"] <= 0:
            await emit(data)
            return
        pieces = self.cut_points(len(data))
        delay_s = self.attrs["delay"] / 1_000_000.0
        for index, (start, end) in enumerate(pieces):
            await emit(data[start:end])
            if delay_s and index < len(pieces) - 1:
                await link.sleep_until(link.now() + delay_s, self)
