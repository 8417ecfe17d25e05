"""Cache writes are refused by an ACL: the targets' user (`default`) loses the @write commands.

Our own admin connection must keep working whatever the ACL says, so apply first creates a
dedicated user `cachestorm-admin` (+@all, random password kept in the ledger) and revert uses it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from cachestorm.chaos.faults.base import Fault

from cachestorm.core.errors import CachestormError

ADMIN_USER = "cachestorm-admin"


@dataclass
class RedisAclReadonly(Fault):
    name = "redis-acl-readonly"
    summary = "ACL SETUSER <user> -@write: the targets' writes fail with NOPERM, reads work"
    touches = ("redis",)

    user: str = "default"

    def _prepare(self) -> dict:
        client = self.redis_admin()
        try:
            users = {line.split()[1]: line.split()[2:] for line in client.acl_list()}
        finally:
            client.close()
        if self.user not in users:
            raise CachestormError(f"fault {self.name!r}: Redis has no ACL user {self.user!r} "
                                  f"(users: {', '.join(users)})")
        # the command rules in order (+@all, -@write, +get ...), as ACL LIST renders them
        commands = " ".join(rule for rule in users[self.user] if rule[:1] in "+-")
        return {"user": self.user, "admin_user": ADMIN_USER, "admin_existed": ADMIN_USER in users,
                "admin_password": secrets.token_hex(16), "previous_commands": commands or "+@all"}

    def _apply(self) -> dict:
        client = self.redis_admin()
        try:
            client.execute_command("ACL", "SETUSER", ADMIN_USER, "on", f">{self.state['admin_password']}",
                                   "~*", "&*", "+@all")
            client.execute_command("ACL", "SETUSER", self.user, "-@write")
        finally:
            client.close()
        # other faults' admin commands (e.g. DEL of hot keys) go through our admin user meanwhile
        self.context.redis_admin_auth = (ADMIN_USER, self.state["admin_password"])
        return {"user": self.user}

    def _admin_client(self):
        import redis

        return redis.Redis.from_url(self.context.redis_url, username=ADMIN_USER,
                                    password=self.state["admin_password"], decode_responses=True,
                                    socket_connect_timeout=3, socket_timeout=5)

    def expiry_actions(self) -> list[dict]:
        """What _revert does, as data: through our admin user, else the context's own credentials."""
        state = self.state
        restore = ["ACL", "SETUSER", state["user"], "nocommands", *str(state["previous_commands"]).split()]
        drop_admin = (["ACL", "SETUSER", ADMIN_USER, f"<{state['admin_password']}"] if state["admin_existed"]
                      else ["ACL", "DELUSER", ADMIN_USER])
        return [self.redis_action([restore, drop_admin], auth=[[ADMIN_USER, state["admin_password"]]])]

    def _revert(self) -> dict:
        import redis

        self.context.redis_admin_auth = None
        client = self._admin_client()
        try:
            try:
                client.ping()
            except redis.AuthenticationError:
                client.close()          # apply never created the admin user: the ACL is untouched too,
                client = self.redis_admin()   # unless someone else changed it; restore through default
            rules = str(self.state["previous_commands"]).split()
            client.execute_command("ACL", "SETUSER", self.state["user"], "nocommands", *rules)
            if self.state["admin_existed"]:  # leave the user as it was: drop only our password
                client.execute_command("ACL", "SETUSER", ADMIN_USER, f"<{self.state['admin_password']}")
            else:
                client.execute_command("ACL", "DELUSER", ADMIN_USER)
        finally:
            client.close()
        return {"user": self.state["user"], "restored": self.state["previous_commands"]}
