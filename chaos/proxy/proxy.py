"""A proxy: a listener, its live connections and its toxics (API semantics of Toxiproxy)."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from typing import Any

from cachestorm.chaos.proxy import fastpath, gojson
from cachestorm.chaos.proxy.connection import ClientSide, Connection
from cachestorm.chaos.proxy.errors import (
    BAD_REQUEST_BODY,
    INVALID_STREAM,
    INVALID_TOXIC_TYPE,
    TOXIC_ALREADY_EXISTS,
    TOXIC_NOT_FOUND,
    ApiError,
)
from cachestorm.chaos.proxy.http import MAX_REQUEST_LINE
from cachestorm.chaos.proxy.listener import Listener, open_listener
from cachestorm.chaos.proxy.stats import ProxyStats
from cachestorm.chaos.proxy.toxics import TOXIC_TYPES
from cachestorm.chaos.proxy.toxics.base import Toxic


class ListenError(ApiError):
    """Binding failed; Toxiproxy answers these with 500 and Go's net error text."""

    def __init__(self, message: str):
        super().__init__(message, 500)


def split_host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep:
        raise ValueError(f"address {address}: missing port in address")
    host = host.strip("[]")
    return host, int(port or 0)


UNIX_PREFIX = "unix:"  # cachestorm extra: `upstream` "unix:/abs/path.sock" (a local server's Unix socket)


def unix_path(upstream: str) -> str | None:
    """The socket path of a `unix:` upstream, else None (a TCP host:port)."""
    return upstream[len(UNIX_PREFIX):] if upstream.startswith(UNIX_PREFIX) else None


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


DEFAULT_LISTEN = "127.0.0.1:0"
# a proxy name and a toxic name, each byte percent-encoded (3 characters), fit in one request line
MAX_NAME_BYTES = (MAX_REQUEST_LINE - 256) // 6


class AddressError(ApiError):
    """A listen address Go's net package refuses (a 500 in Toxiproxy, in its words)."""

    def __init__(self, message: str):
        super().__init__(message, 500)


def parse_listen(listen: str) -> tuple[str, int]:
    """(host, port) of a listen address, checked as Go's net.SplitHostPort and port parsing do.
    No host, or `localhost`, is 127.0.0.1: Toxiproxy binds every interface for no host, loopback
    is safer (a deliberate difference)."""
    listen = listen or DEFAULT_LISTEN
    host, sep, port = listen.rpartition(":")
    if not sep:
        raise AddressError(f"address {listen}: missing port in address")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise AddressError(f"address {listen}: too many colons in address")
    if not port.isdigit():
        raise AddressError(f"address tcp/{port}: unknown port")
    if int(port) > 65535:
        raise AddressError(f"address {port}: invalid port")
    return ("127.0.0.1" if host in ("", "localhost") else host), int(port)


async def resolve_listen(loop: asyncio.AbstractEventLoop, listen: str) -> str:
    """The address `listen` names, as Go's net.ResolveTCPAddr(...).String(): how Toxiproxy decides
    whether /populate or PATCH changes a proxy (`localhost:7070` is `127.0.0.1:7070`). A name is
    looked up off the loop: the data path shares it."""
    host, port = parse_listen(listen)
    try:
        return join_host_port(str(ipaddress.ip_address(host)), port)
    except ValueError:
        pass
    try:
        found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise AddressError(f"lookup {host}: no such host") from None
    found.sort(key=lambda info: info[0] != socket.AF_INET)  # Go's "tcp" prefers IPv4
    return join_host_port(found[0][4][0], port)


class Proxy:
    def __init__(self, loop: asyncio.AbstractEventLoop, name: str, listen: str, upstream: str, expiries=None):
        self.loop = loop
        self.name = name
        self.listen = listen or DEFAULT_LISTEN
        self.upstream = upstream
        self.enabled = False
        self.listener: Listener | None = None
        self.connections: set[Connection] = set()
        self.toxics: list[Toxic] = []  # creation order = chain order
        self.stats = ProxyStats()
        self.expiries = expiries  # the API's Expiries: where a toxic's `duration` is scheduled

    # -- JSON ---------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": self.toxics_json(),
            "stats": self.stats_json(),  # cachestorm extra
        }

    def toxics_json(self) -> list[dict[str, Any]]:
        """Upstream toxics, then downstream ones, each in creation order (Toxiproxy's listing)."""
        ordered = [t for t in self.toxics if t.stream == "upstream"] + [t for t in self.toxics if t.stream != "upstream"]
        return [t.to_json() for t in ordered]

    def stats_json(self) -> dict[str, Any]:
        up, down = self.bytes_moved()
        return {
            "connections_total": self.stats.connections_total,
            "connections_active": len(self.connections),
            "connections_native": sum(1 for conn in self.connections if conn.pair_id is not None),
            "connections_in_kernel": sum(1 for conn in self.connections if conn.in_kernel()),
            "bytes_upstream": up,
            "bytes_downstream": down,
            "toxics_applied": sum(self.stats.toxics_applied.values()),
            "toxics_applied_by_type": dict(sorted(self.stats.toxics_applied.items())),
            "writes_failed": self.stats.writes_failed,
            "commands_faulted": dict(sorted(self.stats.commands_faulted.items())),
        }

    def bytes_moved(self) -> tuple[int, int]:
        return self._with_open(self.stats.closed_bytes_upstream, self.stats.closed_bytes_downstream, "bytes_moved")

    def bytes_sent(self) -> tuple[int, int]:
        return self._with_open(self.stats.closed_sent_upstream, self.stats.closed_sent_downstream, "bytes_sent")

    def _with_open(self, up: int, down: int, counter: str) -> tuple[int, int]:
        """Closed connections' bytes (up, down) plus each open connection's `counter()`."""
        for conn in self.connections:
            conn_up, conn_down = getattr(conn, counter)()
            up += conn_up
            down += conn_down
        return up, down

    # -- listener -------------------------------------------------------------
    def upstream_address(self) -> tuple[str, int] | str:
        """(host, port) for TCP, or the socket path of a `unix:` upstream (cheaper in the kernel
        than TCP loopback; clients still reach the proxy over TCP)."""
        path = unix_path(self.upstream)
        return path if path is not None else split_host_port(self.upstream)

    async def start(self) -> None:
        if self.enabled:
            return
        try:
            host, port = parse_listen(self.listen)
        except AddressError as exc:
            raise ListenError(f"listen tcp: {exc.message}") from None
        try:
            sock = open_listener(host, port)
        except socket.gaierror:
            raise ListenError(f"listen tcp: lookup {host}: no such host") from None
        except OSError as exc:
            reason = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc)).lower()
            raise ListenError(f"listen tcp {join_host_port(host, port)}: bind: {reason}") from None
        self.listener = Listener(self.loop, sock, self._accepted)
        bound_host, bound_port = sock.getsockname()[:2]
        if sock.family == socket.AF_INET6 and bound_host == "::":
            bound_host = "[::]"
        self.listen = join_host_port(bound_host, bound_port)
        self.enabled = True

    def stop(self) -> None:
        """Close the listener and drop every live connection."""
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        self.enabled = False
        for conn in list(self.connections):
            conn.abort()

    async def differs(self, listen: str, upstream: str) -> bool:
        """Toxiproxy's Proxy.Differs: the resolved listen address or the upstream string changed.
        An address that does not parse or resolve is an AddressError (500), before any change."""
        return await resolve_listen(self.loop, listen) != self.listen or upstream != self.upstream

    async def update(self, listen: str, upstream: str, enabled: bool) -> None:
        """Toxiproxy's Proxy.Update: a new address restarts the listener (dropping connections);
        the same address however written keeps the listener, toxics and connections."""
        if await self.differs(listen, upstream):
            self.stop()
            self.listen, self.upstream = listen or DEFAULT_LISTEN, upstream
        if enabled and not self.enabled:
            await self.start()
        elif not enabled and self.enabled:
            self.stop()

    # -- connections ------------------------------------------------------------
    def _accepted(self, sock: socket.socket) -> None:
        """No toxic now: the native engine forwards it (if built); else the Python path."""
        fast = None if self.toxics else fastpath.for_loop(self.loop)
        if fast is not None:
            Connection(self).start_native(sock, fast)
        else:
            self.loop.create_task(self._accept_python(ClientSide(self), sock))

    async def _accept_python(self, client: ClientSide, sock: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: client, sock)
        except OSError:
            client.conn.abort()
            sock.close()

    def connection_opened(self, conn: Connection) -> None:
        self.connections.add(conn)
        self.stats.connections_total += 1

    def connection_closed(self, conn: Connection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            up, down = conn.bytes_moved()
            self.stats.closed_bytes_upstream += up
            self.stats.closed_bytes_downstream += down
            sent_up, sent_down = conn.bytes_sent()
            self.stats.closed_sent_upstream += sent_up
            self.stats.closed_sent_downstream += sent_down

    # -- toxics ------------------------------------------------------------------
    def toxic_order(self) -> list[Toxic]:
        return self.toxics

    def find_toxic(self, name: str) -> Toxic | None:
        for toxic in self.toxics:
            if toxic.name == name:
                return toxic
        return None

    def add_toxic(self, body: dict[str, Any]) -> Toxic:
        """Create a toxic from its API JSON, in Toxiproxy's order of checks: field types (the JSON
        decode), stream, type, duplicate name, then attributes. JSON null keeps a default."""
        for key, want in (("name", str), ("type", str), ("stream", str), ("toxicity", float), ("attributes", dict)):
            value = body.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, want if want is not float else int | float)):
                go_type = {str: "string", float: "float32", dict: "toxics.NoopToxic"}[want]
                raise BAD_REQUEST_BODY.joined(
                    f"json: cannot unmarshal {gojson.kind(value)} into Go struct field ToxicWrapper.{key} of type {go_type}"
                )
        stream_as_given = body.get("stream") or "downstream"
        stream = stream_as_given.lower()
        if stream not in ("upstream", "downstream"):
            raise INVALID_STREAM
        toxic_type = body.get("type") or ""
        cls = TOXIC_TYPES.get(toxic_type)
        if cls is None:
            raise INVALID_TOXIC_TYPE
        if cls.fixed_stream:
            stream = stream_as_given = cls.fixed_stream
        name = body.get("name") or f"{toxic_type}_{stream_as_given}"
        check_name(name)
        if self.find_toxic(name) is not None:
            raise TOXIC_ALREADY_EXISTS
        toxicity = body.get("toxicity")
        toxic = cls(name, stream, 1.0 if toxicity is None else float(toxicity), body.get("attributes") or {})
        toxic.stream_as_given = stream_as_given
        self.toxics.append(toxic)
        if toxic.affects_data:
            fastpath.pause_pairs(self.loop, [conn.pair_id for conn in self.connections if conn.pair_id is not None])
        for conn in list(self.connections):
            if toxic.affects_data:
                conn.leave_fast_path()
                conn.link_for(toxic.stream).attach(toxic)
        self._schedule_expiry(toxic)
        return toxic

    def update_toxic(self, toxic: Toxic, body: dict[str, Any]) -> Toxic:
        new_toxicity = _toxicity(body["toxicity"]) if body.get("toxicity") is not None else toxic.toxicity
        toxic.merge_attributes(body.get("attributes"))  # the live toxic reads attrs on each chunk
        if new_toxicity != toxic.toxicity:
            toxic.toxicity = new_toxicity
            for conn in list(self.connections):
                conn.link_for(toxic.stream).redraw(toxic)
        self._schedule_expiry(toxic)
        return toxic

    def remove_toxic(self, name: str) -> None:
        toxic = self.find_toxic(name)
        if toxic is None:
            raise TOXIC_NOT_FOUND
        self._drop(toxic)

    def reset_toxics(self) -> None:
        for toxic in list(self.toxics):
            self._drop(toxic)

    def _drop(self, toxic: Toxic) -> None:
        self.toxics.remove(toxic)
        if self.expiries is not None:
            self.expiries.cancel(self.toxic_expiry_id(toxic.name))
        for conn in list(self.connections):
            conn.link_for(toxic.stream).detach(toxic)
        if not self.toxics:
            for conn in list(self.connections):
                conn.return_to_fast_path()

    def toxic_expiry_id(self, toxic_name: str) -> str:
        return f"toxic/{self.name}/{toxic_name}"

    def _schedule_expiry(self, toxic: Toxic) -> None:
        """cachestorm extra: attribute `duration` (ms) removes the toxic by itself after that long,
        through the same expiry registry as every other fault's revert."""
        if self.expiries is None:
            return
        duration = toxic.attrs.get("duration", 0)
        if duration > 0:
            action = {"do": "remove-toxic", "proxy": self.name, "toxic": toxic.name}
            self.expiries.add(self.toxic_expiry_id(toxic.name), [action], after_ms=duration,
                              label=f"toxic {toxic.name} on proxy {self.name}")
        else:
            self.expiries.cancel(self.toxic_expiry_id(toxic.name))


def check_name(name: str) -> None:
    """cachestorm refuses a name no request line could carry back (Toxiproxy creates it, then
    cannot route to it)."""
    if len(name.encode()) > MAX_NAME_BYTES:
        raise BAD_REQUEST_BODY.joined(f"name longer than {MAX_NAME_BYTES} bytes (it would not fit in a request URL)")


def _toxicity(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BAD_REQUEST_BODY.joined(
            f"json: cannot unmarshal {gojson.kind(value)} into Go struct field .toxicity of type float32"
        )
    return float(value)
