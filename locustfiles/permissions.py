"""Permissions traffic: checks GET /permissions/{user}/{perm} (history op "check", value 1/0 = granted),
grants/revokes PUT /permissions/{user}/{perm} {"granted": bool}. The key id is the user; each user has
permissions "read", "write", "admin" (read most often checked). Histories name the item `user:perm`
(as the run's truth names them, `permissions:<user>:<perm>`): one user's permissions are separate items.
"""

import random

from cachestorm.traffic.common import CachestormShape, CachestormUser, Process

from cachestorm.core.domains import DOMAINS

SPEC = DOMAINS["permissions"]
Process.domain = SPEC.name
__all__ = ["PermissionsUser", "CachestormShape"]
PERMISSIONS = ("read", "read", "read", "write", "write", "admin")


class PermissionsUser(CachestormUser):
    def perform(self, op, key, intended_ns):
        perm = random.choice(PERMISSIONS)
        path = SPEC.path(f"{key}/{perm}")
        name = f"/{SPEC.resource}/[user]/[perm]"
        item = f"{key}:{perm}"
        if op == "read":
            return self.call("check", key, "GET", path, name, intended_ns, read_granted=True, history_key=item)
        if op == "write":
            grant = random.random() < 0.5
            return self.call("grant" if grant else "revoke", key, "PUT", path, name, intended_ns,
                             body={"granted": grant}, value="1" if grant else "0", history_key=item)
        if op == "delete":
            return self.call("revoke", key, "PUT", path, name, intended_ns, body={"granted": False}, value="0",
                             history_key=item)
        raise ValueError(f"permissions has no operation {op!r}")
