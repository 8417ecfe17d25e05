"""URL checks shared by the CLI, the stack and the targets: one wording for one mistake.
And the one redaction of passwords in URLs, for everything written to a run folder or shown."""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from cachestorm.core.errors import CachestormError

REDACTED = "***"
# scheme://user:password@ (user may be empty: redis://:password@host); a URL's password is percent-encoded,
# so it stops at the first '@', '/', quote or blank
_PASSWORD_IN_URL = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s\"']*):(?P<password>[^@/\s\"']+)@")


def check_url(url: str, schemes: tuple[str, ...], flag: str) -> str:
    """`url` must be SCHEME://HOST:PORT... with one of `schemes`; else a one-line error naming `flag`."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in schemes or not parts.hostname or port is None:
        raise CachestormError(f"{flag} {redact(url)!r} is not a valid URL: expected {schemes[0]}://HOST:PORT/...")
    return url


def redact(text: str) -> str:
    """`text` with the password of every URL in it replaced by ***."""
    return _PASSWORD_IN_URL.sub(lambda match: f"{match['head']}:{REDACTED}@", text)

_SECRET_KEYS = ("password", "secret", "token", "auth")


def scrubbed(data):
    """A copy of JSON-able `data` for display: URL passwords redacted, the value of every key naming a secret
    (password, secret, token, auth) replaced by ***, and those values wherever else they appear (an ACL
    command's `>password`) too."""
    found: set[str] = set()

    def collect(node, secret: bool = False) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                collect(value, secret or any(word in str(key).lower() for word in _SECRET_KEYS))
        elif isinstance(node, list | tuple):
            for value in node:
                collect(value, secret)
        elif secret and isinstance(node, str) and len(node) >= 4 and node != REDACTED:
            found.add(node)

    def mask(node, secret: bool = False):
        if isinstance(node, dict):
            return {key: mask(value, secret or any(word in str(key).lower() for word in _SECRET_KEYS))
                    for key, value in node.items()}
        if isinstance(node, list | tuple):
            return [mask(value, secret) for value in node]
        if secret and node is not None and not isinstance(node, bool):
            return REDACTED
        if isinstance(node, str):
            for value in found:
                node = node.replace(value, REDACTED)
            return redact(node)
        return node

    collect(data)
    return mask(data)


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:  # a name: every address it resolves to must be loopback
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)
