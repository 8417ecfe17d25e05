"""What every fault shares: typed public settings, the prepare / apply / revert life cycle, clients.

A fault is a dataclass whose fields are its public settings. Its life cycle:
- `prepare()` reads whatever `revert()` will need (previous values, generated names) into
  `self.state`. The runner writes settings + state to the ledger *before* `apply()`.
- `apply()` makes the fault take effect; returns details for the journal.
- `revert()` undoes it; safe twice, safe before `apply()`, and works on a fault rebuilt from a
  ledger entry in another process (`chaos heal`).

Self-expiry: a fault whose `expiry_actions()` says how to undo it as data hands that to our proxy
(it runs for the stack's life) just before `apply()`; the proxy runs it when the window (plus
`SELF_EXPIRY_GRACE_MS`) is over - or, for a fault without a window, when this process is gone -
unless `revert()` cancelled it first. So a SIGKILLed controller leaves nothing behind for long.
"""

from __future__ import annotations

import dataclasses
import math
import os
import secrets
from typing import Any, ClassVar
from urllib.parse import urlsplit

from cachestorm.core.errors import CachestormError


class SettingError(CachestormError):
    """A bad fault setting; `field` names it so an experiment file can point at the line."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


SELF_EXPIRY_GRACE_MS = 500   # our own revert normally comes first; the proxy's timer is the safety net


MAX_SETTING = 2**31 - 1  # a Toxiproxy attribute is a 32-bit int; 24 days in ms


def _coerce(name: str, kind: str, value: Any, fault: str) -> Any:
    where = f"setting {name!r} of fault {fault!r}"
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise SettingError(f"{where}: expected true/false, got {value!r}", name)
    if kind in ("int", "float"):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise SettingError(f"{where}: expected a number, got {value!r}", name) from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SettingError(f"{where}: expected a number, got {value!r}", name)
        if not math.isfinite(value):  # 1e400 is inf: int() of it raised OverflowError
            raise SettingError(f"{where}: expected a finite number, got {value!r}", name)
        if value < 0:  # no setting of any fault is negative (a latency, a count, a share)
            raise SettingError(f"{where}: {name} must not be negative (got {value:g})", name)
        if value > MAX_SETTING:
            raise SettingError(f"{where}: at most {MAX_SETTING} (got {value!r})", name)
        if kind == "int":
            if float(value) != int(value):
                raise SettingError(f"{where}: expected a whole number, got {value!r}", name)
            return int(value)
        return float(value)
    if kind == "list[str]":
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list) and all(isinstance(v, str | int) for v in value):
            return [str(v) for v in value]
        raise SettingError(f"{where}: expected a list of strings, got {value!r}", name)
    if kind == "str":
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise SettingError(f"{where}: expected a string, got {value!r}", name)
    raise SettingError(f"{where}: unsupported type {kind}", name)


class Fault:
    """Base class; subclasses are `@dataclass`es whose fields are the public settings."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    touches: ClassVar[tuple[str, ...]] = ()   # "redis", "proxy", "postgres", "targets"
    one_shot: ClassVar[bool] = False           # the effect is instant (nothing to undo)

    context: Any = None
    state: dict | None = None
    window_s: float | None = None              # how long the fault lasts (None: until the run ends)
    self_expiry: str = ""                      # who reverts it if the controller dies (set by apply)
    _reverted: bool = False

    # -- construction ------------------------------------------------------------------
    @classmethod
    def setting_fields(cls) -> list[dataclasses.Field]:
        return [f for f in dataclasses.fields(cls) if not f.name.startswith("_")]

    @classmethod
    def from_settings(cls, settings: dict[str, Any] | None) -> Fault:
        known = {f.name: f for f in cls.setting_fields()}
        parsed = {}
        for key, value in (settings or {}).items():
            field = known.get(key)
            if field is None:
                raise SettingError(f"unknown setting {key!r} for fault {cls.name!r} "
                                   f"(known: {', '.join(known) or 'none'})", key)
            parsed[key] = _coerce(key, str(field.type), value, cls.name)
        fault = cls(**parsed)
        fault.validate()
        return fault

    def settings(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in self.setting_fields()}

    def validate(self) -> None:
        """Check settings that have a range; raise SettingError(field=...)."""

    def bind(self, context, window_s: float | None = None, state: dict | None = None) -> Fault:
        self.context = context
        self.window_s = window_s
        if state is not None:
            self.state = dict(state)
        return self

    # -- safety ----------------------------------------------------------------------
    def check(self) -> None:
        """Refuse a non-loopback address unless the context allows it."""
        ctx = self.context
        urls = {"redis": ("Redis", ctx.redis_url), "proxy": ("the proxy API", ctx.proxy_api_url),
                "postgres": ("PostgreSQL", ctx.postgres_url)}
        for part in self.touches:
            if part in urls:
                what, url = urls[part]
                if not url:
                    raise CachestormError(f"fault {self.name!r} needs {what}'s URL but the context has none")
                ctx.check_local(url, what)
        if "targets" in self.touches:
            for target in ctx.targets:
                ctx.check_local(target.base_url, f"target {target.name}")
        self.check_settings()

    def check_settings(self) -> None:
        """Checks that need the context (e.g. a named target exists); before anything runs."""

    # -- life cycle ------------------------------------------------------------------
    def prepare(self) -> None:
        self.state = self._prepare() or {}
        if not self.one_shot:
            self.state["expiry_id"] = secrets.token_hex(6)

    def apply(self) -> dict:
        if self.state is None:
            self.prepare()
        self._reverted = False
        self.self_expiry = self._arm_expiry()   # before the fault takes effect, like the ledger entry
        return self._apply() or {}

    def revert(self) -> dict:
        """Undo; a second call (or a call before prepare) does nothing."""
        if self._reverted or self.state is None:
            return {"skipped": True}
        details = self._revert() or {}
        self._reverted = True
        self._disarm_expiry()
        return details

    # -- self-expiry -----------------------------------------------------------------
    def expiry_actions(self) -> list[dict]:
        """The revert as data our proxy can run (see chaos.proxy.expiry); [] when nothing needs undoing."""
        return []

    def can_self_expire(self) -> bool:
        """False when only this process can undo it (e.g. a restart through the conductor's callback)."""
        return self.one_shot or type(self).expiry_actions is not Fault.expiry_actions

    def redis_action(self, commands: list[list[str]], auth: list | None = None) -> dict | None:
        """A "redis" expiry action on the context's Redis (its credentials, if any, are tried last);
        None when the proxy may not reach it (its reverts speak plain TCP to a loopback Redis only)."""
        from cachestorm.chaos.proxy import loopback_host

        url = urlsplit(self.context.redis_url)
        if url.scheme != "redis" or not loopback_host(url.hostname or ""):
            return None
        own = [url.username or "default", url.password] if url.password else None
        return {"do": "redis", "address": f"{url.hostname}:{url.port or 6379}",
                "auth": [*(auth or []), own], "commands": commands}

    def _arm_expiry(self) -> str:
        """Hand the revert to the proxy; returns who will revert it and when, or why nobody can."""
        from cachestorm.chaos.faults.process_signals import start_time
        from cachestorm.chaos.proxy import OWNER_NOT_VISIBLE
        from cachestorm.chaos.toxiproxy import ToxiproxyError

        from cachestorm.core.urls import is_loopback

        if self.one_shot:
            return ""
        if not self.can_self_expire():
            return f"none: {self.name} cannot be reverted without its controller; `cachestorm chaos heal`"
        actions = self.expiry_actions()
        api = getattr(self.context, "proxy_api_url", "")
        if not actions:
            return ""   # nothing to undo (e.g. the proxy was disabled already)
        if None in actions:
            url = urlsplit(self.context.redis_url)
            where = f"{url.scheme}://{url.hostname}" if url.hostname else f"{url.scheme}:{url.path}"
            return (f"none: the proxy's reverts reach only a loopback Redis over TCP, not {where}; "
                    "`cachestorm chaos heal` if this process dies")
        if not api:
            return "none: no proxy API to hand the revert to; `cachestorm chaos heal` if this process dies"
        entry = {"id": self.state.setdefault("expiry_id", secrets.token_hex(6)), "actions": actions, "label": self.describe()}
        if self.window_s is not None:
            entry["after_ms"] = self.window_s * 1000 + SELF_EXPIRY_GRACE_MS
        elif is_loopback(urlsplit(api).hostname or ""):
            entry["owner"] = {"pid": os.getpid(), "started": start_time(os.getpid())}
        else:
            return f"none: no window, and the proxy at {api} cannot see this process die"
        try:
            with self.toxiproxy() as client:
                added = client.add_expiry(entry)
        except ToxiproxyError as exc:
            if exc.status not in (None, OWNER_NOT_VISIBLE):
                raise   # the proxy refused the revert: a bug here, not a reason to go on unguarded
            return f"none: {exc}"
        if not added:
            return (f"none: {api} is not cachestorm's proxy (a real Toxiproxy cannot revert by itself); "
                    "`cachestorm chaos heal` if this process dies")
        when = f"{entry['after_ms'] / 1000:g}s after apply" if "after_ms" in entry else "when this process exits"
        return f"the proxy at {api}, {when}"

    def _disarm_expiry(self) -> None:
        from cachestorm.chaos.toxiproxy import ToxiproxyError

        if self.one_shot or not self.state.get("expiry_id") or not getattr(self.context, "proxy_api_url", ""):
            return
        try:
            with self.toxiproxy() as client:
                client.remove_expiry(self.state["expiry_id"])
        except ToxiproxyError:
            pass  # reverted already; the proxy's later run of the same revert changes nothing

    # -- what it touched ------------------------------------------------------------
    def touched(self, applied: dict, reverted: dict) -> dict | None:
        """What the fault acted on, counted where it acted: {"count": n, "unit": "keys expired" ...,
        "source": where the count comes from, "why": why n is 0}; None when it is not counted (a
        fault healed from another process, a real Toxiproxy without counters). n == 0 fails the run:
        a fault that touched nothing tested nothing."""
        return None

    def _prepare(self) -> dict:
        return {}

    def _apply(self) -> dict:
        raise NotImplementedError

    def _revert(self) -> dict:
        return {}

    # -- clients ---------------------------------------------------------------------
    def redis_admin(self):
        """An admin connection; while an ACL fault restricts `default`, as that fault's admin user."""
        import redis

        username, password = getattr(self.context, "redis_admin_auth", None) or (None, None)
        return redis.Redis.from_url(self.context.redis_url, decode_responses=True, username=username,
                                    password=password, socket_connect_timeout=3, socket_timeout=5)

    def toxiproxy(self):
        from cachestorm.chaos.toxiproxy import ToxiproxyClient

        return ToxiproxyClient(self.context.proxy_api_url)

    def describe(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.settings().items())
        return f"{self.name}({shown})"
