"""redis_write_fail (cachestorm extra): fail Redis write commands while reads pass.

A write command named in `commands` (default: every write) whose key matches `keys` (default: any)
is, with probability `rate`, not forwarded, and:
- mode "error": the client gets `-ERR cachestorm: write failed by fault` (inside MULTI the
  transaction is then aborted at EXEC, as a server refusing the command at queue time does);
- mode "drop": the client gets "+OK" or ":1" as if it succeeded (a lost write; not inside MULTI,
  where a lost write would need a made-up EXEC result, so there the write goes through).
`toxicity` keeps Toxiproxy's meaning here: the share of connections the toxic acts on.
"""

from __future__ import annotations

from cachestorm.chaos.proxy.errors import BAD_REQUEST_BODY
from cachestorm.chaos.proxy.redis_commands import WRITE_COMMANDS
from cachestorm.chaos.proxy.toxics.redis_command import RedisReplyToxic

ERROR_REPLY = b"-ERR cachestorm: write failed by fault\r\n"
_OK_COMMANDS = frozenset({b"SET", b"SETEX", b"PSETEX", b"MSET", b"HMSET", b"RENAME", b"RESTORE", b"LSET", b"LTRIM"})


def fake_success(name: bytes) -> bytes:
    return b"+OK\r\n" if name in _OK_COMMANDS else b":1\r\n"


class RedisWriteFailToxic(RedisReplyToxic):
    type_name = "redis_write_fail"
    go_struct = "RedisWriteFailToxic"
    fields = {"rate": (float, 1.0), "mode": (str, "error"), "commands": (list, list(WRITE_COMMANDS)),
              "keys": (list, [])}
    toxicity_per_command = False

    def check_attributes(self):
        if self.attrs["mode"] not in ("error", "drop"):
            raise BAD_REQUEST_BODY.joined(f'attribute mode must be "error" or "drop" (got {self.attrs["mode"]!r})')
        if self.attrs["rate"] > 1:
            raise BAD_REQUEST_BODY.joined(f"attribute rate must be between 0 and 1 (got {self.attrs['rate']})")

    def default_commands(self):
        return WRITE_COMMANDS

    def share(self):
        return self.attrs["rate"]

    def reply_for(self, link, state, name, command):
        drop = self.attrs["mode"] == "drop"
        if (drop and state.in_multi) or not self.hit(link, name, command):
            return None
        link.conn.proxy.stats.writes_failed += 1
        return fake_success(name) if drop else ERROR_REPLY
