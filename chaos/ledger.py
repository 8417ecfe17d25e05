"""The on-disk ledger of applied faults: written before a fault takes effect, so a crashed or
SIGKILLed controller can be cleaned up by `cachestorm chaos heal` from another process.

One JSON line per event, appended under an exclusive lock and fsynced:
    {"op": "apply", "id", "fault", "settings", "state", "window_s", "context", "pid", "at"}
    {"op": "revert", "id", "at", "outcome"}
An entry is active while it has no revert line. When nothing is active the file is emptied.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from chaos.context import DEFAULT_LEDGER, ChaosContext


class Ledger:
    def __init__(self, path: str | Path = DEFAULT_LEDGER):
        self.path = Path(path)

    @contextmanager
    def _locked(self) -> Iterator:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)  # it holds an admin password
        with os.fdopen(fd, "r+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield handle
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @staticmethod
    def _append(handle, record: dict) -> None:
        end = handle.seek(0, os.SEEK_END)
        if end and os.pread(handle.fileno(), 1, end - 1) != b"\n":
            # a torn line from a crash mid-write: end it, or this record would be glued to it and lost
            handle.write("\n")
        handle.write(json.dumps(record, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())

    @staticmethod
    def _active(handle) -> dict[str, dict]:
        handle.seek(0)
        active: dict[str, dict] = {}
        for line in handle.read().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a torn line from a crash mid-write
            if record.get("op") == "apply":
                active[record["id"]] = record
            elif record.get("op") == "revert":
                active.pop(record.get("id"), None)
        return active

    def add(self, fault, context: ChaosContext) -> str:
        """Record a prepared fault (settings + state) before it is applied; returns its id."""
        entry_id = uuid.uuid4().hex[:12]
        record = {"op": "apply", "id": entry_id, "fault": fault.name, "settings": fault.settings(),
                  "state": fault.state, "window_s": fault.window_s, "context": context.plain(),
                  "pid": os.getpid(), "at": time.time()}
        with self._locked() as handle:
            self._append(handle, record)
        return entry_id

    def mark_reverted(self, entry_id: str, outcome: str = "ok") -> None:
        with self._locked() as handle:
            self._append(handle, {"op": "revert", "id": entry_id, "at": time.time(), "outcome": outcome})
            if not self._active(handle):
                handle.truncate(0)

    def active(self) -> list[dict]:
        if not self.path.exists():
            return []
        with self._locked() as handle:
            return list(self._active(handle).values())


def heal(ledger_path: str | Path = DEFAULT_LEDGER, proxy_api_urls: tuple[str, ...] = ()) -> list[dict]:
    """Revert every active ledger entry, then remove leftover cachestorm toxics on the proxies.

    Returns one result per action: {"fault", "id", "outcome", "details"}.
    """
    from chaos.faults import fault_class
    from chaos.faults.toxic import TOXIC_PREFIX
    from chaos.toxiproxy import ToxiproxyClient

    ledger = Ledger(ledger_path)
    results = []
    proxies = set(proxy_api_urls)
    for entry in ledger.active():
        context = ChaosContext.from_plain(entry.get("context", {}), ledger_path=ledger_path)
        context.allow_remote = True  # it was allowed (or local) when applied
        if context.proxy_api_url:
            proxies.add(context.proxy_api_url)
        try:
            fault = fault_class(entry["fault"]).from_settings(entry.get("settings"))
            fault.bind(context, entry.get("window_s"), entry.get("state") or {})
            details = fault.revert()
            outcome = "reverted"
        except Exception as exc:  # noqa: BLE001 - keep healing the rest
            details, outcome = {"error": f"{exc.__class__.__name__}: {exc}"}, "failed"
        if outcome == "reverted":
            ledger.mark_reverted(entry["id"], "healed")
        results.append({"fault": entry["fault"], "id": entry["id"], "outcome": outcome, "details": details})
    for url in sorted(proxies):
        try:
            with ToxiproxyClient(url) as client:
                for proxy_name, proxy in client.proxies().items():
                    for toxic in proxy.get("toxics") or []:
                        if str(toxic.get("name", "")).startswith(TOXIC_PREFIX):
                            client.remove_toxic(proxy_name, toxic["name"])
                            results.append({"fault": "leftover toxic", "id": toxic["name"],
                                            "outcome": "removed", "details": {"proxy": proxy_name}})
        except Exception as exc:  # noqa: BLE001
            results.append({"fault": "leftover toxics", "id": url, "outcome": "failed",
                            "details": {"error": str(exc)}})
    return results
