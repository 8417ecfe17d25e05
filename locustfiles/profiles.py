"""Profiles traffic: `locust -f locustfiles/profiles.py --headless -u 20 -r 20 -t 30s --host http://127.0.0.1:PORT`.

Reads GET /profiles/{id} (a share by the owner with X-User-Id, which bypasses the cache),
writes PUT /profiles/{id}, deletes DELETE /profiles/{id}. Options: docs/design.md "Locust command line".
"""

import random

from cachestorm.traffic.common import CachestormShape, CachestormUser, Process

from cachestorm.core.domains import DOMAINS

SPEC = DOMAINS["profiles"]
Process.domain = SPEC.name
__all__ = ["ProfilesUser", "CachestormShape"]


class ProfilesUser(CachestormUser):
    def perform(self, op, key, intended_ns):
        path, name = SPEC.path(key), SPEC.request_name
        if op == "read":
            share = Process.settings.owner_read_share
            if share and random.random() < share:
                return self.call("read", key, "GET", path, f"{name} owner", intended_ns,
                                 headers={"X-User-Id": str(key)}, user=str(key))
            return self.call("read", key, "GET", path, name, intended_ns)
        if op == "write":
            return self.call("write", key, "PUT", path, name, intended_ns,
                             body={"data": {"name": f"user {key}", "bio": self.value_body()}})
        if op == "delete":
            return self.call("delete", key, "DELETE", path, name, intended_ns)
        raise ValueError(f"profiles has no operation {op!r}")
