"""A minimal HTTP/1.1 server on asyncio streams: enough for requests, httpx, curl and Go clients.

Keep-alive, Content-Length and chunked request bodies; one request at a time per connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

MAX_BODY = 8 << 20
REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 403: "Forbidden",
           404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 500: "Internal Server Error"}  # fmt: skip


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
    content_type: str = "application/json"
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
                raise ValueError("body too large")
            parts.append(await reader.readexactly(size))
            await reader.readline()
    length = int(headers.get("content-length", "0") or 0)
    if length > MAX_BODY:
        raise ValueError("body too large")
    return await reader.readexactly(length) if length else b""


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler) -> None:
    try:
        while True:
            line = await reader.readline()
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
                header_line = await reader.readline()
                if header_line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = header_line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await _read_body(reader, headers)
            path = target.split("?", 1)[0]
            response = await handler(Request(method.upper(), path, headers, body))
            keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
            head = [f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Unknown')}"]
            if response.status != 204:
                head.append(f"Content-Type: {response.content_type}")
                head.append(f"Content-Length: {len(response.body)}")
            head.extend(f"{k}: {v}" for k, v in response.headers.items())
            if not keep_alive:
                head.append("Connection: close")
            payload = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
            writer.write(payload + (response.body if response.status != 204 else b""))
            await writer.drain()
            if not keep_alive:
                return
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        writer.close()
