"""redis_write_fail (cachestorm extra): fail Redis write commands while reads pass.

Reads RESP commands on the upstream stream (pipelining and commands split across TCP chunks
included). A write command named in `commands` is, with probability `rate`:
- mode "error": not forwarded; the client gets `-ERR cachestorm: write failed by fault`;
- mode "drop": not forwarded; the client gets "+OK" or ":1" as if it succeeded (a lost write).
Injected replies are put in the right place among the server's replies by a reply sequencer on
the downstream side, so pipelined clients see answers in order.
"""

from __future__ import annotations

import random
from collections import deque

from chaos.proxy.errors import BAD_REQUEST_BODY
from chaos.proxy.resp import is_push, parse_command, parse_reply
from chaos.proxy.toxics.base import Toxic

DEFAULT_WRITE_COMMANDS = [
    "SET", "SETEX", "PSETEX", "SETNX", "SETRANGE", "GETSET", "GETDEL", "GETEX", "APPEND",
    "MSET", "MSETNX", "DEL", "UNLINK", "EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT", "PERSIST",
    "HSET", "HSETNX", "HMSET", "HDEL", "HINCRBY", "HINCRBYFLOAT",
    "INCR", "INCRBY", "INCRBYFLOAT", "DECR", "DECRBY",
    "LPUSH", "RPUSH", "LPOP", "RPOP", "LREM", "LSET", "LTRIM", "SADD", "SREM", "SPOP",
    "ZADD", "ZREM", "ZINCRBY", "RENAME", "RENAMENX", "COPY", "RESTORE", "XADD",
    "EVAL", "EVALSHA", "FCALL",
]  # fmt: skip
ERROR_REPLY = b"-ERR cachestorm: write failed by fault\r\n"
_OK_COMMANDS = frozenset({b"SET", b"SETEX", b"PSETEX", b"MSET", b"HMSET", b"RENAME", b"RESTORE", b"LSET", b"LTRIM"})


def fake_success(name: bytes) -> bytes:
    return b"+OK\r\n" if name in _OK_COMMANDS else b":1\r\n"


class ReplySequencer:
    """Merges server replies with replies the proxy answers itself, in command order."""

    def __init__(self, conn):
        self.conn = conn
        self.queue: deque = deque()  # int: server replies expected; bytes: an injected reply
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
        while pos < len(buf):
            end = parse_reply(buf, pos)
            if end < 0:
                break
            out.append(bytes(buf[pos:end]))
            if not is_push(buf, pos) and self.queue and isinstance(self.queue[0], int):
                self.queue[0] -= 1
                if self.queue[0] == 0:
                    self.queue.popleft()
                    while self.queue and isinstance(self.queue[0], bytes):
                        out.append(self.queue.popleft())
            pos = end
        del buf[:pos]
        self._write(b"".join(out))
        if self.detached and not self.queue and not self.buf:
            self.conn.drop_sequencer()


class _State:
    def __init__(self):
        self.buf = bytearray()


class RedisWriteFailToxic(Toxic):
    type_name = "redis_write_fail"
    go_struct = "RedisWriteFailToxic"
    fields = {"rate": (float, 1.0), "mode": (str, "error"), "commands": (list, DEFAULT_WRITE_COMMANDS)}
    fixed_stream = "upstream"

    def merge_attributes(self, attributes):
        super().merge_attributes(attributes)
        if self.attrs["mode"] not in ("error", "drop"):
            raise BAD_REQUEST_BODY.joined(f'attribute mode must be "error" or "drop" (got {self.attrs["mode"]!r})')
        if self.attrs["rate"] > 1:
            raise BAD_REQUEST_BODY.joined(f"attribute rate must be between 0 and 1 (got {self.attrs['rate']})")
        self._names = frozenset(c.upper().encode() for c in self.attrs["commands"])

    def new_state(self):
        return _State()

    def attach(self, link, state):
        link.conn.ensure_sequencer(ReplySequencer)

    def detach(self, link, state):
        if state.buf:  # the start of a command not yet complete: it goes on, ahead of the rest
            link.requeue_front(bytes(state.buf))
            state.buf.clear()
        link.conn.release_sequencer()

    async def process(self, link, state, data, emit):
        sequencer = link.conn.replies
        buf = state.buf
        buf += data
        pos = 0
        forward = []
        rate = self.attrs["rate"]
        while pos < len(buf):
            try:
                end, name = parse_command(buf, pos)
            except ValueError:  # not RESP: stop interpreting, pass everything on
                end, name = len(buf), b""
            if end < 0:
                break
            if name in self._names and rate > 0 and random.random() < rate:
                link.conn.proxy.stats.writes_failed += 1
                sequencer.inject(ERROR_REPLY if self.attrs["mode"] == "error" else fake_success(name))
            else:
                forward.append(bytes(buf[pos:end]))
                sequencer.expect_server()
            pos = end
        del buf[:pos]
        if forward:
            await emit(b"".join(forward))
