"""uppercase (a test plug-in toxic): ASCII letters pass through the proxy upper-cased."""

from __future__ import annotations

from cachestorm.chaos.proxy.toxics.base import Toxic


class UppercaseToxic(Toxic):
    type_name = "uppercase"
    go_struct = "UppercaseToxic"

    def process_now(self, link, state, data):
        return data.upper()
