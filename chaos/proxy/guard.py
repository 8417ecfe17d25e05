"""What the proxy API lets a caller open. Like Toxiproxy it has no authentication, and as part of the
stack it may run as root: without this, any local user could have it listen on every interface or on
a privileged port, or forward into a Unix socket only root may connect to (our own Valkey's).
`--allow-remote` lifts every limit."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass

from cachestorm.chaos.proxy.errors import ApiError
from cachestorm.chaos.proxy.proxy import split_host_port, unix_path

FIRST_UNPRIVILEGED_PORT = 1024
FIX = "start the proxy with --allow-remote to allow it"


def forbidden(message: str) -> ApiError:
    return ApiError(message, 403)


@dataclass(frozen=True)
class AddressGuard:
    allow_remote: bool = False
    unix_sockets: frozenset[str] = frozenset()  # resolved paths: a socket, or a folder whose sockets are allowed

    @classmethod
    def of(cls, allow_remote: bool = False, unix_sockets: Iterable[str] = ()) -> AddressGuard:
        return cls(allow_remote, frozenset(os.path.realpath(path) for path in unix_sockets))

    def check(self, listen: str, upstream: str) -> None:
        """Raise a 403 ApiError for a listen address or upstream this proxy may not open."""
        if self.allow_remote:
            return
        self._check_listen(listen)
        path = unix_path(upstream)
        if path is not None and not self._unix_allowed(path):
            raise forbidden(f"upstream {upstream}: not one of this stack's own Unix sockets; {FIX}")

    def _check_listen(self, listen: str) -> None:
        try:
            host, port = split_host_port(listen)
        except ValueError:
            return  # not an address at all: the listener reports it as Toxiproxy does
        if host not in ("", "localhost"):  # the proxy binds both to 127.0.0.1
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = False  # a host name: whatever it resolves to later is not ours to trust
            if not loopback:
                raise forbidden(f"listen {listen}: {host} is not a loopback address; {FIX}")
        if 0 < port < FIRST_UNPRIVILEGED_PORT:
            raise forbidden(f"listen {listen}: port {port} is privileged; {FIX}")

    def _unix_allowed(self, path: str) -> bool:
        resolved = os.path.realpath(path)  # a symlink in an allowed folder must not lead out of it
        return any(resolved == allowed or resolved.startswith(allowed.rstrip("/") + "/")
                   for allowed in self.unix_sockets)
