"""timeout: stop all data; close the connection after `timeout` ms (0 = hold it forever).

Removing the toxic closes the connections it held, as Toxiproxy does (they do not resume).
"""

from __future__ import annotations

from cachestorm.chaos.proxy.toxics.base import Toxic


class _State:
    timer = None


class TimeoutToxic(Toxic):
    type_name = "timeout"
    go_struct = "TimeoutToxic"
    fields = {"timeout": (int, 0)}

    def new_state(self):
        return _State()

    def attach(self, link, state):
        if self.attrs["timeout"] > 0:
            state.timer = link.loop.call_later(self.attrs["timeout"] / 1000.0, link.conn.close)

    async def process(self, link, state, data, emit):
        return  # dropped on the floor

    def detach(self, link, state):
        if state.timer is not None:
            state.timer.cancel()
        link.conn.close()
