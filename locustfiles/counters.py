"""Counters traffic: GET /counters/{id}; writes are POST /counters/{id}/incr {"by": n} with X-Request-Id
(retries reuse it, so an idempotent target applies a retried increment once). At test stop the
master (or local runner) POSTs /counters/flush so write-behind backlogs reach the database.
"""

import json
import logging
import random
import sys
import urllib.request

from cachestorm.traffic.common import CachestormShape, CachestormUser, Process
from locust import events
from locust.runners import WorkerRunner

from cachestorm.core.domains import DOMAINS

SPEC = DOMAINS["counters"]
Process.domain = SPEC.name
__all__ = ["CountersUser", "CachestormShape"]
log = logging.getLogger("cachestorm")


class CountersUser(CachestormUser):
    def perform(self, op, key, intended_ns):
        path, name = SPEC.path(key), SPEC.request_name
        if op == "read":
            return self.call("read", key, "GET", path, name, intended_ns)
        if op == "write":
            by = random.randint(1, 5)
            return self.call("incr", key, "POST", f"{path}/incr", f"{name}/incr", intended_ns,
                             body={"by": by}, value=str(by))
        raise ValueError(f"counters has no operation {op!r}")


@events.test_stop.add_listener
def _flush_counters(environment, **_kwargs):
    if isinstance(environment.runner, WorkerRunner) or not environment.host:
        return
    request = urllib.request.Request(environment.host.rstrip("/") + f"/{SPEC.resource}/flush", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            result = json.loads(response.read() or b"{}")
        sys.stderr.write(f"cachestorm counters flush: {json.dumps(result)}\n")
    except Exception as exc:  # noqa: BLE001 - a failed flush is reported, the run still ends
        sys.stderr.write(f"cachestorm counters flush failed: {type(exc).__name__}: {exc}\n")
