"""A minimal HTTP/1.1 server on asyncio streams: enough for requests, httpx, curl and Go clients.

Keep-alive, Content-Length and chunked request bodies; one request at a time per connection.
Paths are percent-decoded before routing, as Go's net/http does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from urllib.parse import unquote

MAX_BODY = 8 << 20
MAX_REQUEST_LINE = 1 << 16  # also the stream reader's limit for each header line
REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 403: "Forbidden",
           404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 413: "Request Entity Too Large",
           431: "Request Header Fields Too Large", 500: "Internal Server Error"}  # fmt: skip


class BodyTooLarge(Exception):
    pass


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = "application/json"  # None: no Content-Type header (Go's bare 405)
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        total = 0
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            total += size
            if total > MAX_BODY:
                raise BodyTooLarge
            parts.append(await reader.readexactly(size))
            await reader.readline()
    length = int(headers.get("content-length", "0") or 0)
    if length > MAX_BODY:
        raise BodyTooLarge
    return await reader.readexactly(length) if length else b""


def _head(response: Response, keep_alive: bool) -> bytes:
    head = [f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Unknown')}",
            f"Date: {formatdate(usegmt=True)}"]  # fmt: skip
    if response.status != 204:
        if response.content_type is not None:
            head.append(f"Content-Type: {response.content_type}")
        head.append(f"Content-Length: {len(response.body)}")
    head.extend(f"{k}: {v}" for k, v in response.headers.items())
    if not keep_alive:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")


def _refusal(status: int, message: str) -> bytes:
    """An answer before the request was read whole (the connection closes after it)."""
    body = f'{{"error":"{message}","status":{status}}}\n'.encode()
    response = Response(status, body, "text/plain; charset=utf-8", {"X-Content-Type-Options": "nosniff"})
    return _head(response, keep_alive=False) + body


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler) -> None:
    """Serve one client connection; `reader` must have been made with limit=MAX_REQUEST_LINE."""
    try:
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # longer than the reader's limit
                writer.write(_refusal(431, f"request line or header longer than {MAX_REQUEST_LINE} bytes"))
                return
            if not line:
                return
            if line in (b"\r\n", b"\n"):
                continue
            try:
                method, target, version = line.decode("latin-1").split()
            except ValueError:
                writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            headers: dict[str, str] = {}
            while True:
                try:
                    header_line = await reader.readline()
                except ValueError:
                    writer.write(_refusal(431, f"request line or header longer than {MAX_REQUEST_LINE} bytes"))
                    return
                if header_line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = header_line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            try:
                body = await _read_body(reader, headers)
            except BodyTooLarge:
                writer.write(_refusal(413, f"request body too large: at most {MAX_BODY} bytes"))
                return
            path = unquote(target.split("?", 1)[0], errors="replace")
            response = await handler(Request(method.upper(), path, headers, body))
            keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
            writer.write(_head(response, keep_alive) + (response.body if response.status != 204 else b""))
            await writer.drain()
            if not keep_alive:
                return
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        writer.close()
