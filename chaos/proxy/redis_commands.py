"""What the RESP-aware toxics know about Redis commands: which write, where their keys are, which
ones a toxic leaves alone, the error replies a real server sends, and command/key matching."""

from __future__ import annotations

import fnmatch
import re

from cachestorm.chaos.proxy.errors import BAD_REQUEST_BODY
from cachestorm.chaos.proxy.resp import command_args

WRITE_COMMANDS = (
    "SET", "SETEX", "PSETEX", "SETNX", "SETRANGE", "GETSET", "GETDEL", "GETEX", "APPEND",
    "MSET", "MSETNX", "DEL", "UNLINK", "EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT", "PERSIST",
    "HSET", "HSETNX", "HMSET", "HDEL", "HINCRBY", "HINCRBYFLOAT",
    "INCR", "INCRBY", "INCRBYFLOAT", "DECR", "DECRBY",
    "LPUSH", "RPUSH", "LPOP", "RPOP", "LREM", "LSET", "LTRIM", "SADD", "SREM", "SPOP",
    "ZADD", "ZREM", "ZINCRBY", "RENAME", "RENAMENX", "COPY", "RESTORE", "XADD",
    "EVAL", "EVALSHA", "FCALL",
)  # fmt: skip
# Writes that free memory: a server out of memory still runs them (they lack Redis's DENYOOM flag).
_SHRINKING = {"DEL", "UNLINK", "GETDEL", "EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT", "PERSIST", "HDEL",
              "LPOP", "RPOP", "LREM", "LTRIM", "SREM", "SPOP", "ZREM"}  # fmt: skip
OOM_COMMANDS = tuple(c for c in WRITE_COMMANDS if c not in _SHRINKING)

# A toxic answering one of these itself would split the client's and the server's transaction state.
TRANSACTION = frozenset({b"MULTI", b"EXEC", b"DISCARD"})
# After these, RESP2 replies no longer answer commands one to one: a toxic stops answering itself.
SUBSCRIBING = frozenset({b"SUBSCRIBE", b"PSUBSCRIBE", b"SSUBSCRIBE", b"MONITOR"})
# Left alone unless named: connection set-up (redis-py's HELLO / CLIENT SETINFO / SELECT handshake),
# transaction control and subscribing.
UNMATCHED = TRANSACTION | SUBSCRIBING | {b"HELLO", b"AUTH", b"CLIENT", b"SELECT", b"QUIT", b"RESET", b"WATCH",
                                         b"UNWATCH"}

# Error replies as Valkey words them (clients act on the first word).
ERROR_REPLIES = {
    "OOM": b"-OOM command not allowed when used memory > 'maxmemory'.\r\n",
    "LOADING": b"-LOADING Valkey is loading the dataset in memory\r\n",
    "READONLY": b"-READONLY You can't write against a read only replica.\r\n",
    "BUSY": b"-BUSY Valkey is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.\r\n",
}
# The commands a real server refuses with that error (None: every command but UNMATCHED).
ERROR_COMMANDS: dict[str, tuple[str, ...] | None] = {
    "OOM": OOM_COMMANDS, "READONLY": WRITE_COMMANDS, "LOADING": None, "BUSY": None,
}


def error_reply(error: str) -> bytes:
    """The RESP error for `error`: a name from ERROR_REPLIES, or a custom "CODE message"."""
    canned = ERROR_REPLIES.get(error.upper())
    if canned is not None:
        return canned
    text = error[1:] if error.startswith("-") else error
    if not text.strip() or "\r" in text or "\n" in text:
        raise BAD_REQUEST_BODY.joined(
            f"attribute error must be one of {', '.join(ERROR_REPLIES)} or one line like \"ERR message\" "
            f"(got {error!r})")
    return b"-" + text.encode() + b"\r\n"


def error_commands(error: str) -> tuple[str, ...] | None:
    return ERROR_COMMANDS.get(error.upper())


# Where a command's keys are (default: its first argument).
_NO_KEYS = frozenset(
    b"PING ECHO INFO HELLO AUTH CLIENT SELECT MULTI EXEC DISCARD UNWATCH QUIT RESET SCRIPT FUNCTION CONFIG "
    b"DBSIZE FLUSHALL FLUSHDB KEYS SCAN TIME COMMAND PUBLISH SPUBLISH SUBSCRIBE PSUBSCRIBE SSUBSCRIBE "
    b"UNSUBSCRIBE PUNSUBSCRIBE SUNSUBSCRIBE SLOWLOG LATENCY DEBUG ROLE WAIT SAVE BGSAVE BGREWRITEAOF "
    b"LASTSAVE SHUTDOWN MONITOR RANDOMKEY SWAPDB CLUSTER READONLY READWRITE ACL MODULE REPLICAOF".split())
_ALL_KEYS = frozenset(b"MGET DEL UNLINK EXISTS TOUCH WATCH SINTER SUNION SDIFF SINTERSTORE SUNIONSTORE "
                      b"SDIFFSTORE PFCOUNT PFMERGE".split())
_TWO_KEYS = frozenset(b"RENAME RENAMENX COPY SMOVE LMOVE BLMOVE RPOPLPUSH BRPOPLPUSH".split())
_ALL_BUT_LAST = frozenset(b"BLPOP BRPOP BZPOPMIN BZPOPMAX".split())
_KEY_VALUE_PAIRS = frozenset(b"MSET MSETNX".split())
_NUMKEYS = frozenset(b"EVAL EVALSHA EVAL_RO EVALSHA_RO FCALL FCALL_RO".split())
_AFTER_SUBCOMMAND = frozenset(b"OBJECT MEMORY".split())


def command_keys(name: bytes, args: list[bytes]) -> list[bytes]:
    """The keys of a command, from its words (`args[0]` is the name)."""
    rest = args[1:]
    if name in _NO_KEYS:
        return []
    if name in _ALL_KEYS:
        return rest
    if name in _TWO_KEYS:
        return rest[:2]
    if name in _ALL_BUT_LAST:
        return rest[:-1]
    if name in _KEY_VALUE_PAIRS:
        return rest[::2]
    if name in _NUMKEYS:
        try:
            return rest[2 : 2 + int(rest[1])]
        except (IndexError, ValueError):
            return []
    if name in _AFTER_SUBCOMMAND:
        return rest[1:2]
    return rest[:1]


class CommandMatcher:
    """Which commands a toxic acts on: by name (`commands`, [] = its default set) and by key
    (`keys`: glob patterns as in Redis KEYS, [] = any; a command matches when one of its keys does)."""

    def __init__(self, commands: list[str], keys: list[str], default: tuple[str, ...] | None):
        names = [c.strip().upper() for c in commands]
        if any(not n for n in names):
            raise BAD_REQUEST_BODY.joined("attribute commands: a command name must not be empty")
        refused = sorted({n for n in names if n.encode() in TRANSACTION})
        if refused:
            raise BAD_REQUEST_BODY.joined(
                f"attribute commands: {', '.join(refused)} cannot be faulted (the client's and the server's "
                "transaction state would split); fault the commands inside the transaction instead")
        chosen = names or default
        self.names = None if chosen is None else frozenset(n.encode() for n in chosen)
        if any(not k for k in keys):
            raise BAD_REQUEST_BODY.joined("attribute keys: a key pattern must not be empty")
        # byte-wise glob: patterns and keys both seen as latin-1 text, so any key bytes compare
        self.keys = re.compile("|".join(fnmatch.translate(k.encode().decode("latin-1")) for k in keys),
                               re.DOTALL) if keys else None

    def matches(self, name: bytes, command: bytes) -> bool:
        if self.names is None:
            if name in UNMATCHED:
                return False
        elif name not in self.names:
            return False
        if self.keys is None:
            return True
        match = self.keys.match
        return any(match(key.decode("latin-1")) for key in command_keys(name, command_args(command)))
