"""cachestorm extra: reverts the proxy runs by itself when a fault's window ends (or its controller dies).

A controller (`chaos apply`, `cachestorm run`) registers, before a fault takes effect, the revert
as data: {"id", "after_ms", "owner", "label", "actions"}. The proxy runs for the stack's life, so
it executes the actions when `after_ms` has passed, or - for a fault without a window - as soon as
the owner process ({"pid", "started"}) is gone, unless the controller deleted the entry first
(its own revert). Toxics' `duration` attribute is one such entry (action "remove-toxic").

Actions are a closed vocabulary, each checked when registered (a bad one is refused then, not
when it fires):
    {"do": "enable-proxy", "proxy"}                       a disabled proxy of ours listens again
    {"do": "remove-toxic", "proxy", "toxic"}
    {"do": "redis", "address": "127.0.0.1:6379", "auth": [[user, password] | null, ...],
     "commands": [["CONFIG", "SET", ...], ...]}           CONFIG SET maxmemory[-policy] / ACL SETUSER /
                                                          ACL DELUSER only,
                                                          on a loopback TCP Redis (anyone local can
                                                          reach it: no access beyond the caller's)
    {"do": "signal", "pid", "started", "signal": "SIGCONT"}   only SIGCONT, only the same process
Passwords (in "auth") are never listed back.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import deque
from typing import Any

from cachestorm.chaos.faults.process_signals import start_time
from cachestorm.chaos.proxy import OWNER_NOT_VISIBLE, loopback_host
from cachestorm.chaos.proxy.errors import ApiError
from cachestorm.chaos.proxy.resp import parse_reply

OWNER_CHECK_S = 1.0          # how often owners of window-less entries are looked for
DONE_KEPT = 100              # fired entries kept for `chaos status`
REDIS_TIMEOUT_S = 5.0
_REDIS_COMMANDS = {("CONFIG", "SET"), ("ACL", "SETUSER"), ("ACL", "DELUSER")}
_CONFIG_PARAMETERS = {"maxmemory", "maxmemory-policy"}   # what our faults change; not `dir`, `dbfilename` ...


def _bad(message: str) -> ApiError:
    return ApiError(f"bad expiry: {message}", 400)


def check_actions(actions: Any) -> list[dict]:
    if not isinstance(actions, list) or not actions:
        raise _bad("actions must be a non-empty list")
    for action in actions:
        kind = action.get("do") if isinstance(action, dict) else None
        if kind in ("enable-proxy", "remove-toxic"):
            fields = ("proxy",) if kind == "enable-proxy" else ("proxy", "toxic")
            if not all(isinstance(action.get(f), str) and action[f] for f in fields):
                raise _bad(f"{kind} needs {' and '.join(fields)}")
        elif kind == "redis":
            _check_redis(action)
        elif kind == "signal":
            if action.get("signal") != "SIGCONT" or not isinstance(action.get("pid"), int) \
                    or not isinstance(action.get("started"), str):
                raise _bad("signal needs an int pid, its start time and signal SIGCONT (the only one allowed)")
        else:
            raise _bad(f"unknown action {kind!r} (enable-proxy, remove-toxic, redis, signal)")
    return actions


def _check_redis(action: dict) -> None:
    host, _sep, port = str(action.get("address", "")).rpartition(":")
    if not (loopback_host(host) and port.isdigit()):
        raise _bad(f"redis address {action.get('address')!r} must be a loopback host:port")
    auth = action.get("auth", [None])
    if not isinstance(auth, list) or not all(a is None or (isinstance(a, list) and len(a) == 2) for a in auth):
        raise _bad("redis auth must be a list of [user, password] or null (tried in order)")
    commands = action.get("commands")
    if not isinstance(commands, list) or not commands or not all(
            isinstance(c, list) and len(c) >= 2 and all(isinstance(w, str) for w in c) for c in commands):
        raise _bad("redis commands must be a list of lists of strings")
    for command in commands:
        if (command[0].upper(), command[1].upper()) not in _REDIS_COMMANDS:
            raise _bad(f"redis command {command[0]} {command[1]} is not allowed "
                       "(CONFIG SET, ACL SETUSER, ACL DELUSER)")
        if command[0].upper() == "CONFIG" and (len(command) != 4 or command[2].lower() not in _CONFIG_PARAMETERS):
            raise _bad(f"CONFIG SET may only set one of {', '.join(sorted(_CONFIG_PARAMETERS))}")


def _shown(entry: dict) -> dict:
    """An entry as listed: without passwords and timer handles."""
    actions = [{**a, "auth": ["***" if a_ else None for a_ in a.get("auth", [])]} if a["do"] == "redis" else a
               for a in entry["actions"]]
    return {k: v for k, v in entry.items() if k != "handle"} | {"actions": actions}


class Expiries:
    def __init__(self, loop: asyncio.AbstractEventLoop, proxies: dict, lock: asyncio.Lock):
        self.loop = loop
        self.proxies = proxies            # the API's proxies by name (for in-process actions)
        self.lock = lock                  # the API's lock: an expiry changes proxies like a request does
        self.pending: dict[str, dict] = {}
        self.done: deque[dict] = deque(maxlen=DONE_KEPT)
        self._watch: asyncio.TimerHandle | None = None

    def add(self, entry_id: str, actions: list[dict], after_ms: float | None = None,
            owner: dict | None = None, label: str = "") -> dict:
        """Schedule; an existing id is replaced (a toxic's new `duration`)."""
        check_actions(actions)
        if after_ms is None and owner is None:
            raise _bad("needs after_ms, an owner, or both (else it would never fire)")
        if owner is not None and not (isinstance(owner.get("pid"), int) and isinstance(owner.get("started"), str)):
            raise _bad("owner must be {pid: int, started: str}")
        if owner is not None and start_time(owner["pid"]) != owner["started"]:
            # another PID namespace (a container), or already dead: watching it would fire at once
            raise ApiError(f"owner pid {owner['pid']} is not visible from the proxy", OWNER_NOT_VISIBLE)
        self.cancel(entry_id)
        entry = {"id": entry_id, "label": label, "actions": actions, "owner": owner, "registered_at": time.time(),
                 "due_at": None if after_ms is None else time.time() + after_ms / 1000.0}
        if after_ms is not None:
            entry["handle"] = self.loop.call_later(after_ms / 1000.0, self._fire, entry_id, "window ended")
        self.pending[entry_id] = entry
        if owner is not None and self._watch is None:
            self._watch = self.loop.call_later(OWNER_CHECK_S, self._check_owners)
        return _shown(entry)

    def cancel(self, entry_id: str) -> bool:
        entry = self.pending.pop(entry_id, None)
        if entry is not None and entry.get("handle") is not None:
            entry["handle"].cancel()
        return entry is not None

    def listing(self) -> dict:
        return {"pending": [_shown(e) for e in self.pending.values()], "done": [_shown(e) for e in self.done]}

    def close(self) -> None:
        for entry_id in list(self.pending):
            self.cancel(entry_id)
        if self._watch is not None:
            self._watch.cancel()

    # -- firing -----------------------------------------------------------------------
    def _check_owners(self) -> None:
        self._watch = None
        watched = [e for e in self.pending.values() if e["owner"] is not None]
        for entry in watched:
            if start_time(entry["owner"]["pid"]) != entry["owner"]["started"]:
                self._fire(entry["id"], f"owner pid {entry['owner']['pid']} is gone")
        if any(e["owner"] is not None for e in self.pending.values()):
            self._watch = self.loop.call_later(OWNER_CHECK_S, self._check_owners)

    def _fire(self, entry_id: str, reason: str) -> None:
        entry = self.pending.pop(entry_id, None)
        if entry is not None:
            self.loop.create_task(self._run(entry, reason))

    async def _run(self, entry: dict, reason: str) -> None:
        outcomes = []
        async with self.lock:
            for action in entry["actions"]:
                try:
                    await self._do(action)
                    outcomes.append("ok")
                except Exception as exc:  # noqa: BLE001 - the next action still runs; the outcome is listed
                    outcomes.append(f"failed: {exc.__class__.__name__}: {exc}")
        entry.update(fired_at=time.time(), reason=reason, outcomes=outcomes,
                     outcome="ok" if all(o == "ok" for o in outcomes) else "failed")
        entry.pop("handle", None)
        self.done.append(entry)

    async def _do(self, action: dict) -> None:
        kind = action["do"]
        if kind == "enable-proxy":
            proxy = self.proxies.get(action["proxy"])
            if proxy is None:
                raise LookupError(f"no proxy {action['proxy']!r}")
            await proxy.start()
        elif kind == "remove-toxic":
            proxy = self.proxies.get(action["proxy"])
            if proxy is not None and proxy.find_toxic(action["toxic"]) is not None:
                proxy.remove_toxic(action["toxic"])
        elif kind == "signal":
            if start_time(action["pid"]) == action["started"]:  # not a process that reused the PID
                os.kill(action["pid"], signal.SIGCONT)
        else:
            await asyncio.wait_for(_redis(action), REDIS_TIMEOUT_S)


async def _redis(action: dict) -> None:
    host, _sep, port = action["address"].rpartition(":")
    reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
    try:
        for auth in action.get("auth") or [None]:
            if auth is None or not (await _call(reader, writer, ["AUTH", *auth])).startswith(b"-"):
                break   # the first credentials that work (null: none needed)
        else:
            raise PermissionError("no credentials in auth were accepted")
        for command in action["commands"]:
            reply = await _call(reader, writer, command)
            if reply.startswith(b"-"):
                raise RuntimeError(f"{' '.join(command[:2])}: {reply[1:].strip().decode(errors='replace')}")
    finally:
        writer.close()


async def _call(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, command: list[str]) -> bytes:
    parts = [f"*{len(command)}\r\n".encode()]
    for word in command:
        data = word.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    writer.write(b"".join(parts))
    buf = bytearray()
    while parse_reply(buf, 0) < 0:
        chunk = await reader.read(65536)
        if not chunk:
            raise ConnectionError("Redis closed the connection")
        buf += chunk
    return bytes(buf)
