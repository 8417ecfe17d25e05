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
            # the connections the disable cuts (cachestorm's proxy counts them; a real Toxiproxy does not)
            stats = client.get_proxy(self.state["proxy"]).get("stats")
            client.update_proxy(self.state["proxy"], enabled=False)
        finally:
            client.close()
        details = {"proxy": self.state["proxy"]}
        if isinstance(stats, dict) and "connections_active" in stats and self.state.get("was_enabled", True):
            details["connections_cut"] = int(stats["connections_active"])
        return details

    def touched(self, applied: dict, reverted: dict) -> dict | None:
        cut = applied.get("connections_cut")
        if not isinstance(cut, int):
            return None
        return {"count": cut, "unit": "connections cut", "source": "the proxy's connections_active at the disable",
                "why": f"no connection was open through proxy {applied['proxy']} when it was disabled"}

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
