"""reset_peer: on the first data, wait `timeout` ms then reset the connection (TCP RST)."""

from __future__ import annotations

from cachestorm.chaos.proxy.toxics.base import Toxic


class _State:
    timer = None
    triggered = False


class ResetPeerToxic(Toxic):
    type_name = "reset_peer"
    go_struct = "ResetToxic"
    fields = {"timeout": (int, 0)}

    def new_state(self):
        return _State()

    async def process(self, link, state, data, emit):
        # The data is held back (Toxiproxy blocks the pipe) and lost with the reset.
        if not state.triggered:
            state.triggered = True
            state.timer = link.loop.call_later(self.attrs["timeout"] / 1000.0, link.conn.reset)

    def detach(self, link, state):
        if state.timer is not None:
            state.timer.cancel()
