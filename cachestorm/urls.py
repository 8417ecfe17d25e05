"""URL checks shared by the CLI, the stack and the targets: one wording for one mistake."""

from __future__ import annotations

from urllib.parse import urlsplit

from cachestorm.errors import CachestormError


def check_url(url: str, schemes: tuple[str, ...], flag: str) -> str:
    """`url` must be SCHEME://HOST:PORT... with one of `schemes`; else a one-line error naming `flag`."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in schemes or not parts.hostname or port is None:
        raise CachestormError(f"{flag} {url!r} is not a valid URL: expected {schemes[0]}://HOST:PORT/...")
    return url
