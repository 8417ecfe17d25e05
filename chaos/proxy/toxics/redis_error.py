"""redis_error (cachestorm extra): a share (`toxicity`) of matching commands get an error reply
instead of reaching the server: `error` is OOM, LOADING, READONLY, BUSY (in Valkey's words) or a
custom "CODE message". By default the commands a real server refuses with that error: writes that
grow memory for OOM, every write for READONLY, every command for LOADING, BUSY and custom errors
(connection set-up and transaction control excepted); `commands` and `keys` narrow it.
"""

from __future__ import annotations

from cachestorm.chaos.proxy.redis_commands import error_commands, error_reply
from cachestorm.chaos.proxy.toxics.redis_command import RedisReplyToxic


class RedisErrorToxic(RedisReplyToxic):
    type_name = "redis_error"
    go_struct = "RedisErrorToxic"
    fields = {"error": (str, "READONLY"), **RedisReplyToxic.fields}

    def check_attributes(self):
        self.reply = error_reply(self.attrs["error"])

    def default_commands(self):
        return error_commands(self.attrs["error"])

    def reply_for(self, link, state, name, command):
        return self.reply if self.hit(link, name, command) else None
