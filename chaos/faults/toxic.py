"""Faults made of Toxiproxy toxics on one proxy: named toxics added at apply, removed at revert.

Toxic names start with `cachestorm-chaos-` so `chaos heal` can find leftovers. On our own proxy
the removal is handed to the proxy (`expiry_actions`, see base.py), so a toxic goes away when its
window ends even if the controller died.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import ClassVar

from cachestorm.chaos.faults.base import Fault, SettingError

TOXIC_PREFIX = "cachestorm-chaos-"


@dataclass
class ToxicFault(Fault):
    touches = ("proxy",)
    toxic_type: ClassVar[str] = ""
    default_streams: ClassVar[tuple[str, ...]] = ("downstream",)

    def attributes(self) -> dict:
        return {}

    def streams(self) -> list[str]:
        streams = getattr(self, "stream", "") or ",".join(self.default_streams)
        chosen = [s.strip() for s in streams.split(",") if s.strip()]
        if streams == "both":
            chosen = ["upstream", "downstream"]
        for stream in chosen:
            if stream not in ("upstream", "downstream"):
                raise SettingError(f"fault {self.name!r}: stream must be upstream, downstream or both, "
                                   f"got {stream!r}", "stream")
        return chosen

    def validate(self) -> None:
        self.streams()
        toxicity = getattr(self, "toxicity", 1.0)
        if not 0 <= toxicity <= 1:
            raise SettingError(f"fault {self.name!r}: toxicity must be within 0..1", "toxicity")

    def _prepare(self) -> dict:
        client = self.toxiproxy()
        try:
            ours = client.is_ours()
            proxy = self.context.proxy_name(getattr(self, "proxy", "redis"))
            client.get_proxy(proxy)  # a clear error now if it does not exist
        finally:
            client.close()
        tag = secrets.token_hex(3)
        names = {stream: f"{TOXIC_PREFIX}{self.name}-{stream}-{tag}" for stream in self.streams()}
        return {"proxy": proxy, "toxics": names, "ours": ours}

    def _counters(self) -> dict | None:
        """This proxy's counters of our toxic type (cachestorm's proxy only; None on a real Toxiproxy)."""
        if not self.state.get("ours"):
            return None
        client = self.toxiproxy()
        try:
            stats = client.get_proxy(self.state["proxy"]).get("stats") or {}
        finally:
            client.close()
        return {"connections": int((stats.get("toxics_applied_by_type") or {}).get(self.toxic_type, 0)),
                "commands_faulted": int((stats.get("commands_faulted") or {}).get(self.toxic_type, 0)),
                "bytes": int(stats.get("bytes_upstream", 0)) + int(stats.get("bytes_downstream", 0))}

    def _apply(self) -> dict:
        self._counters_before = self._counters()
        attributes = self.attributes()
        client = self.toxiproxy()
        try:
            for stream, name in self.state["toxics"].items():
                client.add_toxic(self.state["proxy"], self.toxic_type, attributes, name=name, stream=stream,
                                 toxicity=getattr(self, "toxicity", 1.0))
        finally:
            client.close()
        return {"proxy": self.state["proxy"], "toxics": list(self.state["toxics"].values()),
                "attributes": attributes}

    def expiry_actions(self) -> list[dict]:
        return [{"do": "remove-toxic", "proxy": self.state["proxy"], "toxic": name}
                for name in self.state["toxics"].values()]

    def _revert(self) -> dict:
        client = self.toxiproxy()
        removed = []
        try:
            for name in self.state["toxics"].values():
                if client.remove_toxic(self.state["proxy"], name):
                    removed.append(name)
        finally:
            client.close()
        details = {"removed": removed}
        before = getattr(self, "_counters_before", None)  # unknown when healed from another process
        after = self._counters() if before is not None else None
        if after is not None:
            # what this toxic type acted on in the window, by the proxy's own counters
            details["counted"] = {name: after[name] - before[name] for name in after}
        return details

    def touched(self, applied: dict, reverted: dict) -> dict | None:
        """Connections the toxic applied to while data passed (the proxy's counters over the window)."""
        counted = reverted.get("counted")
        if not isinstance(counted, dict):
            return None
        proxy = self.state.get("proxy") if self.state else "?"
        if not counted["bytes"]:
            why = f"no data passed proxy {proxy} during the window"
        else:
            why = f"no connection of proxy {proxy} was open or opened during the window"
        return {"count": counted["connections"] if counted["bytes"] else 0,
                "unit": f"connections reached ({self.toxic_type} toxic)", "why": why,
                "source": f"the proxy's toxics_applied_by_type[{self.toxic_type}] and bytes over the window"}
