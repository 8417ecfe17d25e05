"""What the RESP-aware toxics share: whole commands read from the upstream stream (pipelining and
commands split across TCP chunks included), `commands` / `keys` matching, and, for the toxics that
answer commands themselves, the reply sequencer and MULTI/EXEC handling.

`toxicity` is the share of matching *commands* affected (drawn per command) for the toxics with
`toxicity_per_command`; Toxiproxy's per-connection draw would fault a fixed subset of a client's
pooled connections instead.
"""

from __future__ import annotations

import random
from typing import ClassVar

from cachestorm.chaos.proxy.errors import ApiError
from cachestorm.chaos.proxy.redis_commands import SUBSCRIBING, CommandMatcher
from cachestorm.chaos.proxy.replies import ReplySequencer
from cachestorm.chaos.proxy.resp import parse_command
from cachestorm.chaos.proxy.toxics.base import Toxic

# Sent in place of a command refused inside MULTI: the server rejects an unknown command at queue
# time and so aborts the EXEC, as it would for a real -OOM/-READONLY/-LOADING at queue time; its
# -EXECABORT reply reaches the client as the server words it.
POISON_NAME = b"CACHESTORM-INJECTED-FAULT"
POISON = b"*1\r\n$%d\r\n%s\r\n" % (len(POISON_NAME), POISON_NAME)


class CommandStream:
    def __init__(self):
        self.buf = bytearray()
        self.in_multi = False  # between MULTI and EXEC/DISCARD
        self.passthrough = False  # subscribed or not RESP: replies no longer pair with commands


class RedisCommandToxic(Toxic):
    fields = {"commands": (list, []), "keys": (list, [])}
    fixed_stream = "upstream"
    toxicity_per_command: ClassVar[bool] = True

    def merge_attributes(self, attributes):
        before = dict(self.attrs)
        try:
            super().merge_attributes(attributes)
            self._compile()
        except ApiError:
            if before:  # a refused update leaves the live toxic as it was
                self.attrs = before
                self._compile()
            raise

    def _compile(self) -> None:
        self.check_attributes()
        self.matcher = CommandMatcher(self.attrs["commands"], self.attrs["keys"], self.default_commands())

    def check_attributes(self) -> None:
        """Refuse bad attribute values (one-line 400s); runs on create and on every update."""

    def default_commands(self) -> tuple[str, ...] | None:
        """The commands acted on when `commands` is empty (None: every command but UNMATCHED)."""
        return None

    def applies_to_link(self) -> bool:
        return True if self.toxicity_per_command else super().applies_to_link()

    def share(self) -> float:
        """The probability that a matching command is affected."""
        return self.toxicity if self.toxicity_per_command else 1.0

    def hit(self, link, name: bytes, command: bytes) -> bool:
        """Whether this command is affected (and if so, counted in the proxy's stats)."""
        share = self.share()
        if share <= 0 or not self.matcher.matches(name, command):
            return False
        if share < 1 and random.random() >= share:
            return False
        link.conn.proxy.stats.commands_faulted[self.type_name] += 1
        return True

    def new_state(self):
        return CommandStream()

    def detach(self, link, state):
        if state.buf:  # the start of a command not yet complete: it goes on, ahead of the rest
            link.requeue_front(bytes(state.buf))
            state.buf.clear()

    def split(self, state: CommandStream, data: bytes) -> list[tuple[bytes, bytes]]:
        """The complete commands in what arrived so far, as (upper-cased name, wire bytes); the
        rest waits in `state.buf`. Not RESP: everything passes on with name b"" and the stream is
        no longer interpreted."""
        buf = state.buf
        buf += data
        if state.passthrough:
            rest = bytes(buf)
            buf.clear()
            return [(b"", rest)]
        pos = 0
        commands = []
        while pos < len(buf):
            try:
                end, name = parse_command(buf, pos)
            except ValueError:
                end, name = len(buf), b""
                state.passthrough = True
            if end < 0:
                break
            commands.append((name, bytes(buf[pos:end])))
            pos = end
        del buf[:pos]
        return commands


class RedisReplyToxic(RedisCommandToxic):
    """A RESP-aware toxic that answers some commands itself: `reply_for` says with what.

    Several of them on one link act as one: the first in the chain reads the commands and asks each
    in chain order (the first reply wins); the others pass bytes on. So every command is counted
    once in the one reply sequencer and one MULTI state is kept."""

    def reply_for(self, link, state: CommandStream, name: bytes, command: bytes) -> bytes | None:
        """The reply to answer `command` with, or None to forward it; `state` is the reading toxic's."""
        raise NotImplementedError

    def holds(self, link, state) -> bool:
        """True: nothing from this connection goes on (it is being reset); `state` is this toxic's."""
        return False

    def attach(self, link, state):
        link.conn.ensure_sequencer(ReplySequencer)

    def detach(self, link, state):
        super().detach(link, state)
        link.conn.release_sequencer()

    async def process(self, link, state, data, emit):
        peers = [(toxic, peer_state) for toxic, peer_state in link.chain if isinstance(toxic, RedisReplyToxic)]
        if peers and peers[0][0] is not self:
            await emit(data)  # the first of us on this link reads and answers for all
            return
        peers = peers or [(self, state)]
        if any(toxic.holds(link, peer_state) for toxic, peer_state in peers):
            return
        sequencer = link.conn.replies
        forward = []
        for name, command in self.split(state, data):
            reply = None
            if not state.passthrough:
                for toxic, _ in peers:
                    reply = toxic.reply_for(link, state, name, command)
                    if reply is not None:
                        break
            if reply is None:
                sequencer.expect_server()  # an EXEC after a refusal: the server's own -EXECABORT
                forward.append(command)
            elif state.in_multi:
                forward.append(POISON)
                sequencer.substitute(reply)
            else:
                sequencer.inject(reply)
            if name == b"MULTI":
                state.in_multi = True
            elif name in (b"EXEC", b"DISCARD", b"RESET"):
                state.in_multi = False
            elif name in SUBSCRIBING:
                state.passthrough = True
        if forward:
            await emit(b"".join(forward))
