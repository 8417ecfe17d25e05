"""The base of faults made of our proxy's RESP-aware toxics (not in the real Toxiproxy): the
commands / keys they act on, checked by the proxy's own rules before anything runs."""

from __future__ import annotations

from dataclasses import dataclass, field

from cachestorm.chaos.faults.base import SettingError
from cachestorm.chaos.faults.toxic import ToxicFault
from cachestorm.chaos.proxy.errors import BAD_REQUEST_BODY, ApiError
from cachestorm.chaos.proxy.redis_commands import CommandMatcher, error_reply

from cachestorm.core.errors import CachestormError


def proxy_rule(fault: str, check, *args) -> None:
    """Run one of the proxy's attribute checks; its 400 becomes this fault's SettingError."""
    try:
        check(*args)
    except ApiError as exc:
        raise SettingError(f"fault {fault!r}: {exc.message.removeprefix(BAD_REQUEST_BODY.message + ': ')}") from None


@dataclass
class RedisProtocolFault(ToxicFault):
    commands: list[str] = field(default_factory=list)   # []: the toxic's default commands
    keys: list[str] = field(default_factory=list)       # glob patterns ("hot:*"); []: any key
    proxy: str = "redis"
    stream: str = "upstream"

    def validate(self) -> None:
        super().validate()
        for name, value in self.settings().items():
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise SettingError(f"fault {self.name!r}: {name} must not be negative (got {value})", name)
        proxy_rule(self.name, CommandMatcher, self.commands, self.keys, None)
        if hasattr(self, "error"):
            proxy_rule(self.name, error_reply, self.error)

    def _prepare(self) -> dict:
        state = super()._prepare()
        if not state["ours"]:
            raise CachestormError(f"fault {self.name!r} needs cachestorm's proxy ({self.toxic_type} is not a "
                                  "Toxiproxy toxic); use redis-oom or redis-acl-readonly instead")
        return state

    def _revert(self) -> dict:
        details = super()._revert()
        if "counted" in details:
            # commands this toxic type acted on in the window: the journal shows whether it bit
            details["commands_faulted"] = details["counted"]["commands_faulted"]
        return details

    def touched(self, applied: dict, reverted: dict) -> dict | None:
        faulted = reverted.get("commands_faulted")
        if not isinstance(faulted, int):
            return None
        which = " ".join(c.upper() for c in self.commands) or "matching"
        keys = f" on keys {', '.join(self.keys)}" if self.keys else ""
        proxy = self.state.get("proxy") if self.state else "?"
        return {"count": faulted, "unit": "commands faulted",
                "source": f"the proxy's commands_faulted[{self.toxic_type}] over the window",
                "why": f"no {which} command{keys} passed proxy {proxy} during the window"}

    def attributes(self) -> dict:
        attributes = {}
        if self.commands:
            attributes["commands"] = [c.upper() for c in self.commands]
        if self.keys:
            attributes["keys"] = list(self.keys)
        return attributes
