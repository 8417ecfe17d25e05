"""A service is unreachable: its proxy is disabled (listener closed, connections dropped). The base
of redis-down (redis_down.py) and db-down (db_down.py).

Our proxy re-enables it by itself when the window ends (an "enable-proxy" expiry action).
"""

from __future__ import annotations

from dataclasses import dataclass

from cachestorm.chaos.faults.base import Fault


@dataclass
class ProxyDown(Fault):
    touches = ("proxy",)

    proxy: str = ""  # each fault names its service's proxy

    def _prepare(self) -> dict:
        proxy = self.context.proxy_name(self.proxy)
        client = self.toxiproxy()
        try:
            enabled = bool(client.get_proxy(proxy).get("enabled", True))
        finally:
            client.close()
        return {"proxy": proxy, "was_enabled": enabled}

    def _apply(self) -> dict:
        client = self.toxiproxy()
        try:
            client.update_proxy(self.state["proxy"], enabled=False)
        finally:
            client.close()
        return {"proxy": self.state["proxy"]}

    def expiry_actions(self) -> list[dict]:
        return [{"do": "enable-proxy", "proxy": self.state["proxy"]}] if self.state.get("was_enabled", True) else []

    def _revert(self) -> dict:
        client = self.toxiproxy()
        try:
            if self.state.get("was_enabled", True):
                client.update_proxy(self.state["proxy"], enabled=True)
        finally:
            client.close()
        return {"proxy": self.state["proxy"], "enabled": self.state.get("was_enabled", True)}
