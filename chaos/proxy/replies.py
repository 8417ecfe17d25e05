"""The Redis reply sequencer: merges the server's replies with replies the proxy answers itself.

A RESP-aware toxic that answers a command itself (never forwarding it) or replaces the server's
answer to one tells the sequencer, in command order; the sequencer sits on the downstream side and
writes every reply to the client in that order, so pipelined and MULTI clients stay in sync. RESP3
pushes (">") answer no command and pass straight on.
"""

from __future__ import annotations

from collections import deque

from cachestorm.chaos.proxy.resp import is_push, parse_reply


class Substitute:
    """Swallow the server's next reply; the client gets `reply` in its place."""

    __slots__ = ("reply",)

    def __init__(self, reply: bytes):
        self.reply = reply


class ReplySequencer:
    def __init__(self, conn):
        self.conn = conn
        # int: server replies to pass on; bytes: an injected reply; Substitute: a replaced server reply
        self.queue: deque = deque()
        self.buf = bytearray()
        self.detached = False

    def _write(self, data: bytes) -> None:
        client = self.conn.client
        if data and client is not None and client.transport is not None and not self.conn.closed:
            client.transport.write(data)

    def expect_server(self) -> None:
        if self.queue and isinstance(self.queue[-1], int):
            self.queue[-1] += 1
        else:
            self.queue.append(1)

    def inject(self, reply: bytes) -> None:
        self.queue.append(reply)
        self._flush_injected()

    def substitute(self, reply: bytes) -> None:
        self.queue.append(Substitute(reply))

    def _flush_injected(self) -> None:
        out = []
        while self.queue and isinstance(self.queue[0], bytes):
            out.append(self.queue.popleft())
        if out:
            self._write(b"".join(out))

    def server_data(self, data: bytes) -> None:
        self.buf += data
        pos = 0
        out = []
        buf = self.buf
        queue = self.queue
        while pos < len(buf):
            end = parse_reply(buf, pos)
            if end < 0:
                break
            if is_push(buf, pos) or not queue:
                out.append(bytes(buf[pos:end]))
            elif isinstance(queue[0], Substitute):
                out.append(queue.popleft().reply)
            else:
                out.append(bytes(buf[pos:end]))
                queue[0] -= 1
                if queue[0] == 0:
                    queue.popleft()
            while queue and isinstance(queue[0], bytes):
                out.append(queue.popleft())
            pos = end
        del buf[:pos]
        self._write(b"".join(out))
        if self.detached and not queue and not self.buf:
            self.conn.drop_sequencer()
