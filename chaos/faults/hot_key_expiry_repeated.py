"""The top-N hot keys expire now and again every `every_ms` for the fault's window: hot items whose
cached copy keeps expiring under load (a short TTL on a front page, a live score whose every update
expires it), so each expiry finds the database's queue still full from the last one. A single
expiry on an idle database refills the hottest keys within one recompute; this is the stampede that
does not let go. Each expiry is hot-key-expiry's (`mode: expire` or `evict`, `source: model` or
`lfu`), on the keys chosen at the first one.

The repeats run on a thread of this process until the window ends (revert); nothing outlives the
process, so there is nothing for the proxy to undo if it dies.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from cachestorm.chaos.faults.base import SettingError
from cachestorm.chaos.faults.hot_key_expiry import HotKeyExpiry

from cachestorm.core.domains import redis_key
from cachestorm.core.errors import CachestormError

# no expiry this close to the window's end: the runner's revert is due then
END_MARGIN_S = 0.05


@dataclass
class HotKeyExpiryRepeated(HotKeyExpiry):
    name = "hot-key-expiry-repeated"
    summary = "expire the top-N hot keys now and again every every_ms while the window lasts"
    one_shot = False

    every_ms: int = 2000

    def validate(self) -> None:
        super().validate()
        if self.every_ms < 100:
            raise SettingError(f"fault {self.name!r}: every_ms must be >= 100", "every_ms")

    def expiry_actions(self) -> list[dict]:
        return []  # the repeats stop with this process: nothing to undo

    def _apply(self) -> dict:
        first = super()._apply()
        keys = [redis_key(self.domain or self.context.domain, key_id) for key_id in first["key_ids"]]
        self._stop = threading.Event()
        self._expiries = [first["keys"]]
        self._errors: list[str] = []
        self._thread = threading.Thread(target=self._repeat, args=(keys, time.monotonic()), daemon=True,
                                        name=f"fault-{self.name}")
        self._thread.start()
        return first

    def _repeat(self, keys: list[str], started: float) -> None:
        interval = self.every_ms / 1000
        end = None if self.window_s is None else started + self.window_s - END_MARGIN_S
        due = started + interval
        while end is None or due < end:
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return
            try:
                client = self.redis_admin()
                try:
                    self._expiries.append(self._expire(client, keys))
                finally:
                    client.close()
            except Exception as exc:  # noqa: BLE001 - reported by revert: the run must not pass silently
                self._errors.append(f"{type(exc).__name__}: {exc}")
            due += interval

    def _revert(self) -> dict:
        thread = getattr(self, "_thread", None)
        if thread is None:  # rebuilt from the ledger (`chaos heal`): its repeats died with their process
            return {}
        self._stop.set()
        thread.join()
        if self._errors:
            raise CachestormError(f"{len(self._errors)} of the repeated expiries failed (last: {self._errors[-1]})")
        return {"expiries": len(self._expiries), "keys": sum(self._expiries)}

    def touched(self, applied: dict, reverted: dict) -> dict | None:
        keys, expiries = reverted.get("keys"), reverted.get("expiries")
        if not isinstance(keys, int):
            return None  # healed from the ledger: its repeats were not counted here
        why = applied.get("why_nothing") or "none of its hot keys was in the cache at any expiry"
        return {"count": keys, "unit": f"keys expired over {expiries} expiries" if self.mode == "expire"
                else f"keys evicted over {expiries} expiries", "source": "Redis (keys found and changed)",
                "why": why}
