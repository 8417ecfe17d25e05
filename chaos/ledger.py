"""The on-disk ledger of applied faults: written before a fault takes effect, so a crashed or
SIGKILLed controller can be cleaned up by `cachestorm chaos heal` from another process.

One JSON line per event, appended under an exclusive lock and fsynced:
    {"op": "apply", "id", "fault", "settings", "state", "window_s", "context", "pid", "at"}
    {"op": "revert", "id", "at", "outcome"}
An entry is active while it has no revert line. When nothing is active the file is emptied.
A file that is not such a ledger (binary, other text, a record without `fault`, not a regular file,
someone else's) is refused with `LedgerError` and left as it is: it may be the user's, or the only
record of a live fault. A new ledger is created 0600. Entries keep no PostgreSQL password (no revert
needs one); they keep the Redis URL as given (an adopted Redis's password is what `heal` reverts with)
and redis-acl-readonly's temporary admin password (its revert, also the proxy's self-expiry, logs in with it).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cachestorm.chaos.context import DEFAULT_LEDGER, ChaosContext

from cachestorm.core.errors import CachestormError
from cachestorm.core.urls import redact


class LedgerError(CachestormError):
    """The ledger file cannot be read as one (exit 2); nothing was changed."""


class Ledger:
    def __init__(self, path: str | Path = DEFAULT_LEDGER):
        self.path = Path(path)

    @contextmanager
    def _locked(self) -> Iterator:
        """The ledger, open and locked. A file we did not just create must be one we recognise (ours, a
        regular file, every line a ledger record: see `_active`), else LedgerError and it is left untouched."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise self._unusable(f"{self.path.parent} is a file, not a folder") from None
        except OSError as exc:
            raise self._unusable(f"cannot make its folder: {exc.strerror or exc}") from None
        flags = os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW
        created = True
        try:
            fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o600)  # it holds an admin password
        except FileExistsError:
            created = False
            try:
                fd = os.open(self.path, flags)
            except OSError as exc:
                raise self._unusable("a symlink" if exc.errno == errno.ELOOP else exc.strerror or str(exc)) from None
        except OSError as exc:
            raise self._unusable(exc.strerror or str(exc)) from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            os.close(fd)
            raise self._unusable("not a regular file" if not stat.S_ISREG(info.st_mode)
                                 else f"it belongs to uid {info.st_uid}, not to us")
        with os.fdopen(fd, "r+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                if not created:
                    self._active(handle)  # recognised, or refused before anything is written
                    if stat.S_IMODE(info.st_mode) & 0o077:
                        os.fchmod(fd, 0o600)  # ours and a ledger: no one else reads it
                yield handle
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def check(self) -> None:
        """Refuse (LedgerError, one line) a ledger path we could not use, before any fault is prepared."""
        with self._locked():
            pass

    def _unusable(self, why: str) -> LedgerError:
        return LedgerError(f"the fault ledger {self.path} cannot be used ({why}); pass another --ledger")

    @staticmethod
    def _append(handle, record: dict) -> None:
        end = handle.seek(0, os.SEEK_END)
        if end and os.pread(handle.fileno(), 1, end - 1) != b"\n":
            # a torn line from a crash mid-write: end it, or this record would be glued to it and lost
            handle.write("\n")
        handle.write(json.dumps(record, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())

    def _active(self, handle) -> dict[str, dict]:
        fd = handle.fileno()
        raw = os.pread(fd, os.fstat(fd).st_size, 0)
        try:
            lines = raw.decode("utf-8").splitlines()
        except UnicodeDecodeError:
            raise self._unreadable("it is binary, not JSON lines") from None
        active: dict[str, dict] = {}
        for number, line in enumerate(lines, start=1):
            try:
                record = json.loads(line)
            except ValueError:
                if line.startswith("{") or not line.strip():
                    continue  # a torn line from a crash mid-write (we only ever write objects)
                raise self._unreadable(f"line {number} is not a JSON record") from None
            op = record.get("op") if isinstance(record, dict) else None
            if op not in ("apply", "revert") or not isinstance(record.get("id"), str):
                raise self._unreadable(f"line {number} is not an apply/revert record with an id")
            if op == "apply":
                if not isinstance(record.get("fault"), str):
                    raise self._unreadable(f"line {number} is an apply record without a fault name")
                active[record["id"]] = record
            else:
                active.pop(record["id"], None)
        return active

    def _unreadable(self, why: str) -> LedgerError:
        return LedgerError(f"the fault ledger {self.path} is not a cachestorm ledger ({why}); it was left as it "
                           "is: look at it, move it away (or pass another --ledger) and try again")

    def add(self, fault, context: ChaosContext) -> str:
        """Record a prepared fault (settings + state) before it is applied; returns its id."""
        entry_id = uuid.uuid4().hex[:12]
        plain = context.plain()
        # no fault's revert connects to PostgreSQL directly (its faults act on the proxy): its password stays out
        plain["postgres_url"] = redact(plain.get("postgres_url") or "")
        record = {"op": "apply", "id": entry_id, "fault": fault.name, "settings": fault.settings(),
                  "state": fault.state, "window_s": fault.window_s, "context": plain,
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


def server_gone(exc: BaseException) -> bool:
    """Whether `exc` says nothing listens where the fault lives any more (connection refused, no socket).

    Every fault lives in a server's memory (a proxy's toxics and `enabled`, Redis's CONFIG and ACL,
    a stopped process), so a server that is gone took its fault with it. A timeout is not proof.
    """
    from cachestorm.chaos.toxiproxy import ToxiproxyError

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ConnectionRefusedError | FileNotFoundError):
            return True
        if isinstance(exc, ToxiproxyError) and exc.refused:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def heal(ledger_path: str | Path = DEFAULT_LEDGER, proxy_api_urls: tuple[str, ...] = ()) -> list[dict]:
    """Revert every active ledger entry, then remove leftover cachestorm toxics on the proxies.

    An entry whose server is gone (a stack since stopped or killed) is reported as "gone" and dropped:
    its fault went with the server. Returns one result per action: {"fault", "id", "outcome", "details"}.
    """
    from cachestorm.chaos.faults import fault_class
    from cachestorm.chaos.faults.toxic import TOXIC_PREFIX
    from cachestorm.chaos.toxiproxy import ToxiproxyClient

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
            details = {"error": f"{exc.__class__.__name__}: {exc}"}
            outcome = "gone" if server_gone(exc) else "failed"
            if outcome == "gone":
                details["note"] = "its server no longer runs, and the fault went with it"
        if outcome != "failed":
            ledger.mark_reverted(entry["id"], "healed" if outcome == "reverted" else "server gone")
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
            results.append({"fault": "leftover toxics", "id": url, "outcome": "gone" if server_gone(exc) else "failed",
                            "details": {"error": str(exc)}})
    return results


def refuse_active_faults(ledger_path: str | Path = DEFAULT_LEDGER) -> None:
    """Before a run: a fault left active (a killed run's ACL read-only, its low maxmemory) would break
    the run's reset or skew its numbers, so the run does not start on top of it. Entries the proxy
    has already reverted by itself are closed here instead."""
    from cachestorm.chaos.faults.process_signals import start_time
    from cachestorm.chaos.self_expiry import expired_by_proxy, listings

    ledger = Ledger(ledger_path)
    active = ledger.active()
    if not active:
        return
    found = listings(sorted({(e.get("context") or {}).get("proxy_api_url") for e in active} - {None, ""}))
    for entry in [e for e in active if expired_by_proxy(e, found)]:
        ledger.mark_reverted(entry["id"], "expired by the proxy")
        active.remove(entry)
    if not active:
        return
    names = ", ".join(sorted({entry["fault"] for entry in active}))
    live = sorted({entry.get("pid") for entry in active if isinstance(entry.get("pid"), int)
                   and start_time(entry["pid"]) is not None})
    who = f"; pid {', '.join(map(str, live))} still applies some" if live else ""
    raise CachestormError(f"{len(active)} fault(s) are still active from an earlier run or `chaos apply` "
                          f"({names}, in {ledger_path}{who}); run `cachestorm chaos heal` first")
