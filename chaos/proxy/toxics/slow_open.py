"""slow_open (cachestorm extra): delay each new connection by `delay` ms before it is connected
upstream and data flows (a slow TCP handshake / accept queue)."""

from __future__ import annotations

from cachestorm.chaos.proxy.toxics.base import Toxic


class SlowOpenToxic(Toxic):
    type_name = "slow_open"
    go_struct = "SlowOpenToxic"
    fields = {"delay": (int, 0)}
    affects_data = False  # acts once, when a connection is opened
