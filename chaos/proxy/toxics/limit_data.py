"""limit_data: pass `bytes` bytes through, then close the connection."""

from __future__ import annotations

from cachestorm.chaos.proxy.toxics.base import Toxic


class _State:
    transmitted = 0


class LimitDataToxic(Toxic):
    type_name = "limit_data"
    go_struct = "LimitDataToxic"
    fields = {"bytes": (int, 0)}

    def new_state(self):
        return _State()

    async def process(self, link, state, data, emit):
        remaining = max(self.attrs["bytes"] - state.transmitted, 0)
        if remaining < len(data):
            data = data[:remaining]
        if data:
            state.transmitted += len(data)
            await emit(data)
        if self.attrs["bytes"] - state.transmitted <= 0:
            link.conn.close()
