"""redis_failover (cachestorm extra): the primary behind the proxy fails over to a replica.

From the moment the toxic is added:
1. every live connection is reset (TCP RST), as the old primary's connections break;
2. for `down` ms, new connections are reset on their first command (nothing is promoted yet);
3. for the next `refuse` ms, commands get `error` (READONLY: writes refused, as by a node still a
   replica; LOADING: every command, as by a promoted node loading its data set);
4. then everything is accepted (the toxic stays, inert, until removed or its `duration` ends).
`toxicity` keeps Toxiproxy's meaning: the share of connections that see the failover.
"""

from __future__ import annotations

import time

from cachestorm.chaos.proxy.redis_commands import error_commands, error_reply
from cachestorm.chaos.proxy.toxics.redis_command import RedisReplyToxic


def _live(conn) -> bool:
    """Opened before the toxic (its upstream is connected or held by the native engine), not one
    being accepted now."""
    return conn.server is not None or conn.pair_id is not None or conn.python_only


class RedisFailoverToxic(RedisReplyToxic):
    type_name = "redis_failover"
    go_struct = "RedisFailoverToxic"
    fields = {"down": (int, 0), "refuse": (int, 2000), "error": (str, "READONLY"), **RedisReplyToxic.fields}
    toxicity_per_command = False

    def __init__(self, *args, **kwargs):
        self.started = time.monotonic()  # the failover's clock; updating attributes does not restart it
        super().__init__(*args, **kwargs)

    def check_attributes(self):
        self.reply = error_reply(self.attrs["error"])

    def default_commands(self):
        return error_commands(self.attrs["error"])

    def _elapsed_ms(self) -> float:
        return (time.monotonic() - self.started) * 1000.0

    def new_state(self):
        state = super().new_state()
        state.doomed = False
        return state

    def attach(self, link, state):
        super().attach(link, state)
        if _live(link.conn):
            state.doomed = True  # what it sends until the reset is lost with it
            link.conn.reset_when_wired()

    def holds(self, link, state):
        if state.doomed:
            return True
        if self._elapsed_ms() < self.attrs["down"]:
            link.conn.reset()
            return True
        return False

    def reply_for(self, link, state, name, command):
        if self._elapsed_ms() >= self.attrs["down"] + self.attrs["refuse"]:
            return None
        return self.reply if self.hit(link, name, command) else None
