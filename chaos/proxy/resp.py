"""Incremental RESP parsing: split a byte stream into whole Redis commands or replies.

Both return how many bytes a complete message takes from `pos`, or -1 if more bytes are needed.
"""

from __future__ import annotations

_LINE_TYPES = frozenset(b"+-:_,#(")
_BULK_TYPES = frozenset(b"$=!")
_AGGREGATE_TYPES = frozenset(b"*~>")
_PAIR_TYPES = frozenset(b"%|")


def parse_command(buf: bytes | bytearray, pos: int) -> tuple[int, bytes]:
    """One client command at `pos`: (end, upper-cased command name) or (-1, b"")."""
    if buf[pos] != 0x2A:  # inline command: one line
        nl = buf.find(b"\n", pos)
        if nl < 0:
            return -1, b""
        words = bytes(buf[pos:nl]).split()
        return nl + 1, (words[0].upper() if words else b"")
    nl = buf.find(b"\r\n", pos)
    if nl < 0:
        return -1, b""
    count = int(buf[pos + 1 : nl])
    cursor = nl + 2
    name = b""
    for index in range(count):
        nl = buf.find(b"\r\n", cursor)
        if nl < 0:
            return -1, b""
        size = int(buf[cursor + 1 : nl])
        start = nl + 2
        end = start + size + 2
        if end > len(buf):
            return -1, b""
        if index == 0:
            name = bytes(buf[start : start + size]).upper()
        cursor = end
    return cursor, name


def command_args(command: bytes) -> list[bytes]:
    """Every word of one complete command (as split by parse_command), the name first, as sent."""
    if command[:1] != b"*":  # inline
        return command.split()
    nl = command.find(b"\r\n")
    args = []
    cursor = nl + 2
    for _ in range(int(command[1:nl])):
        nl = command.find(b"\r\n", cursor)
        start = nl + 2
        end = start + int(command[cursor + 1 : nl])
        args.append(command[start:end])
        cursor = end + 2
    return args


def parse_reply(buf: bytes | bytearray, pos: int) -> int:
    """End of one complete reply (RESP2 or RESP3) at `pos`, or -1."""
    if pos >= len(buf):
        return -1
    kind = buf[pos]
    nl = buf.find(b"\r\n", pos)
    if nl < 0:
        return -1
    if kind in _LINE_TYPES:
        return nl + 2
    if kind in _BULK_TYPES:
        size = int(buf[pos + 1 : nl])
        if size < 0:
            return nl + 2
        end = nl + 2 + size + 2
        return end if end <= len(buf) else -1
    if kind in _AGGREGATE_TYPES or kind in _PAIR_TYPES:
        count = int(buf[pos + 1 : nl])
        if kind in _PAIR_TYPES:
            count *= 2
        cursor = nl + 2
        for _ in range(max(count, 0)):
            cursor = parse_reply(buf, cursor)
            if cursor < 0:
                return -1
        if kind == 0x7C:  # attribute: the reply it decorates follows
            return parse_reply(buf, cursor)
        return cursor
    raise ValueError(f"not RESP: {bytes(buf[pos:pos + 20])!r}")


def is_push(buf: bytes | bytearray, pos: int) -> bool:
    return buf[pos] == 0x3E  # ">" RESP3 push: out of band, answers no command
