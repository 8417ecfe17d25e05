"""slow_close: delay closing the connection by `delay` ms after the peer closed."""

from __future__ import annotations

from cachestorm.chaos.proxy.toxics.base import Toxic


class SlowCloseToxic(Toxic):
    type_name = "slow_close"
    go_struct = "SlowCloseToxic"
    fields = {"delay": (int, 0)}

    async def on_eof(self, link, state):
        await link.sleep_until(link.now() + self.attrs["delay"] / 1000.0, self)
