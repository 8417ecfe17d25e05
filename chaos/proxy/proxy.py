"""A proxy: a listener, its live connections and its toxics (API semantics of Toxiproxy)."""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import Any

from chaos.proxy import fastpath
from chaos.proxy.errors import (
    INVALID_STREAM,
    INVALID_TOXIC_TYPE,
    TOXIC_ALREADY_EXISTS,
    TOXIC_NOT_FOUND,
    ApiError,
)
from chaos.proxy.link import ClientSide, Connection
from chaos.proxy.listener import Listener, open_listener
from chaos.proxy.stats import ProxyStats
from chaos.proxy.toxics import TOXIC_TYPES
from chaos.proxy.toxics.base import Toxic


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


class Proxy:
    def __init__(self, loop: asyncio.AbstractEventLoop, name: str, listen: str, upstream: str, expiries=None):
        self.loop = loop
        self.name = name
        self.listen = listen or "127.0.0.1:0"
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
            "toxics": [t.to_json() for t in self.toxics],
            "stats": self.stats_json(),  # cachestorm extra
        }

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
            "writes_failed": self.stats.writes_failed,
            "commands_faulted": dict(sorted(self.stats.commands_faulted.items())),
        }

    def bytes_moved(self) -> tuple[int, int]:
        up = self.stats.closed_bytes_upstream
        down = self.stats.closed_bytes_downstream
        for conn in self.connections:
            conn_up, conn_down = conn.bytes_moved()
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
            host, port = split_host_port(self.listen)
        except ValueError as exc:
            raise ListenError(f"listen tcp {self.listen}: {exc}") from None
        host = host or "127.0.0.1"  # Toxiproxy binds all interfaces here; loopback is safer
        if host == "localhost":
            host = "127.0.0.1"
        try:
            sock = open_listener(host, port)
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

    async def update(self, listen: str, upstream: str, enabled: bool) -> None:
        """Toxiproxy's Proxy.Update: a new address restarts the listener (dropping connections)."""
        if listen != self.listen or upstream != self.upstream:
            self.stop()
            self.listen, self.upstream = listen or "127.0.0.1:0", upstream
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

    # -- toxics ------------------------------------------------------------------
    def toxic_order(self) -> list[Toxic]:
        return self.toxics

    def find_toxic(self, name: str) -> Toxic | None:
        for toxic in self.toxics:
            if toxic.name == name:
                return toxic
        return None

    def add_toxic(self, body: dict[str, Any]) -> Toxic:
        """Create a toxic from its API JSON, in Toxiproxy's order of checks."""
        stream = body.get("stream", "downstream")
        if not isinstance(stream, str) or stream.lower() not in ("upstream", "downstream"):
            raise INVALID_STREAM
        stream = stream.lower()
        toxic_type = body.get("type", "")
        cls = TOXIC_TYPES.get(toxic_type) if isinstance(toxic_type, str) else None
        if cls is None:
            raise INVALID_TOXIC_TYPE
        name = body.get("name") or f"{toxic_type}_{cls.fixed_stream or stream}"
        if self.find_toxic(name) is not None:
            raise TOXIC_ALREADY_EXISTS
        toxicity = _toxicity(body.get("toxicity", 1.0))
        toxic = cls(name, cls.fixed_stream or stream, toxicity, body.get("attributes") or {})
        self.toxics.append(toxic)
        if toxic.affects_data:
            fastpath.pause_pairs(self.loop, [conn.pair_id for conn in self.connections if conn.pair_id is not None])
        for conn in list(self.connections):
            if toxic.affects_data:
                conn.leave_fast_path()
                conn.link_for(toxic.stream).attach(toxic)
        self._schedule_expiry(toxic)
        return toxic

    def update_toxic(self, name: str, body: dict[str, Any]) -> Toxic:
        toxic = self.find_toxic(name)
        if toxic is None:
            raise TOXIC_NOT_FOUND
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


def _toxicity(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(
            "bad request body: json: cannot unmarshal "
            f"{'string' if isinstance(value, str) else 'value'} into Go struct field "
            "ToxicWrapper.toxicity of type float32",
            400,
        )
    return float(value)

