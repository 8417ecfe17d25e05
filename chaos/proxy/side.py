"""One socket of a proxied connection, as an asyncio protocol feeding its outgoing link."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from cachestorm.chaos.proxy.busy_poll import BUSY_POLL

if TYPE_CHECKING:
    from cachestorm.chaos.proxy.connection import Connection
    from cachestorm.chaos.proxy.link import Link


class Side(asyncio.Protocol):
    """One socket of a proxied connection. `forward` is rebound by the link for speed."""

    def __init__(self, conn: Connection, out_link: Link, in_link: Link):
        self.conn = conn
        self.out_link = out_link  # carries what this socket reads
        self.in_link = in_link  # carries what this socket is written
        self.transport: asyncio.Transport | None = None
        self.nbytes = 0
        self.forward: Any = out_link.pending.append
        self.retired = False  # its socket went to the native engine: the transport's end means nothing

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.nbytes += len(data)
        self.forward(data)
        poll = BUSY_POLL
        poll.activity += 1
        if poll.idle:
            poll.wake()

    def eof_received(self) -> bool:
        self.out_link.feed_eof()
        return True  # we close both sides ourselves (after slow_close & co.)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.retired or self.conn.closed:
            return
        if self.out_link.slow and not self.out_link.eof_queued:
            self.out_link.feed_eof()
        else:
            self.conn.close()

    def pause_writing(self) -> None:
        self.in_link.sink_paused()

    def resume_writing(self) -> None:
        self.in_link.sink_resumed()
