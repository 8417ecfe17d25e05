"""The one Toxiproxy client: a small synchronous wrapper over the Toxiproxy v2 HTTP API.

It drives either cachestorm's own proxy (`chaos.proxy`) or a real Toxiproxy server.
Every failure (connection refused, HTTP error) becomes a `ToxiproxyError`, a
`CachestormError` with a one-line message, carrying the HTTP status when there was one.
"""

from __future__ import annotations

from typing import Any

import httpx
from cachestorm.chaos.proxy import EXPIRIES_PATH, INFO_PATH

from cachestorm.core.errors import CachestormError


class ToxiproxyError(CachestormError):
    """A failed call to the Toxiproxy API; `status` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None, refused: bool = False):
        super().__init__(message)
        self.status = status
        self.refused = refused   # nothing listens there: the server is gone


class ToxiproxyClient:
    """Synchronous client for the Toxiproxy v2 API at `base_url` (e.g. http://127.0.0.1:8474)."""

    def __init__(self, base_url: str = "http://127.0.0.1:8474", timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        # A non-browser User-Agent: Toxiproxy answers 403 to anything starting with "Mozilla/".
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            headers={"User-Agent": "cachestorm-toxiproxy-client/1"},
            trust_env=False,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ToxiproxyClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- transport -----------------------------------------------------------
    def _call(self, method: str, path: str, json: Any = None, ok: tuple[int, ...] = ()) -> httpx.Response:
        try:
            response = self._http.request(method, path, json=json)
        except httpx.HTTPError as exc:
            raise ToxiproxyError(
                f"cannot reach the Toxiproxy API at {self.base_url} ({type(exc).__name__}: {exc}); "
                "start it with `cachestorm proxy serve` or `cachestorm up`",
                refused=isinstance(exc, httpx.ConnectError),
            ) from None
        if response.status_code >= 400 and response.status_code not in ok:
            raise ToxiproxyError(
                f"Toxiproxy API {method} {path} answered {response.status_code}: {_error_text(response)}",
                status=response.status_code,
            )
        return response

    # -- proxies -------------------------------------------------------------
    def proxies(self) -> dict:
        """All proxies, keyed by name."""
        return self._call("GET", "/proxies").json()

    def create_proxy(self, name: str, listen: str, upstream: str, enabled: bool = True) -> dict:
        body = {"name": name, "listen": listen, "upstream": upstream, "enabled": enabled}
        return self._call("POST", "/proxies", json=body).json()

    def get_proxy(self, name: str) -> dict:
        return self._call("GET", f"/proxies/{name}").json()

    def update_proxy(self, name: str, **fields: Any) -> dict:
        """Change `enabled`, `listen` or `upstream` (POST: understood by every Toxiproxy 2.x)."""
        return self._call("POST", f"/proxies/{name}", json=fields).json()

    def delete_proxy(self, name: str) -> None:
        self._call("DELETE", f"/proxies/{name}")

    def populate(self, proxies: list[dict]) -> list[dict]:
        """Create or update each proxy; returns the resulting proxies."""
        answer = self._call("POST", "/populate", json=list(proxies)).json()
        return answer.get("proxies") or []

    def reset(self) -> None:
        """Re-enable every proxy and delete every toxic."""
        self._call("POST", "/reset")

    # -- toxics --------------------------------------------------------------
    def toxics(self, proxy: str) -> list:
        return self._call("GET", f"/proxies/{proxy}/toxics").json()

    def add_toxic(
        self,
        proxy: str,
        type: str,  # the API field name
        attributes: dict | None = None,
        name: str | None = None,
        stream: str = "downstream",
        toxicity: float = 1.0,
    ) -> dict:
        body = {
            "name": name or f"{type}_{stream}",
            "type": type,
            "stream": stream,
            "toxicity": toxicity,
            "attributes": dict(attributes or {}),
        }
        return self._call("POST", f"/proxies/{proxy}/toxics", json=body).json()

    def get_toxic(self, proxy: str, name: str) -> dict:
        return self._call("GET", f"/proxies/{proxy}/toxics/{name}").json()

    def update_toxic(
        self, proxy: str, name: str, attributes: dict | None = None, toxicity: float | None = None
    ) -> dict:
        """Merge-update: attributes and toxicity left out keep their values."""
        body: dict[str, Any] = {}
        if attributes is not None:
            body["attributes"] = dict(attributes)
        if toxicity is not None:
            body["toxicity"] = toxicity
        return self._call("POST", f"/proxies/{proxy}/toxics/{name}", json=body).json()

    def remove_toxic(self, proxy: str, name: str) -> bool:
        """Delete a toxic; True if it existed. A missing toxic (404) is fine, so this is safe twice."""
        response = self._call("DELETE", f"/proxies/{proxy}/toxics/{name}", ok=(404,))
        return response.status_code != 404

    # -- cachestorm's proxy only: reverts it runs by itself (chaos.proxy.expiry) ---------
    def add_expiry(self, entry: dict) -> bool:
        """Register a revert; False if the server has no such endpoint (a real Toxiproxy)."""
        return self._call("POST", EXPIRIES_PATH, json=entry, ok=(404,)).status_code != 404

    def remove_expiry(self, entry_id: str) -> bool:
        """Cancel a pending revert; True if it was pending."""
        return self._call("DELETE", f"{EXPIRIES_PATH}/{entry_id}", ok=(404,)).status_code != 404

    def expiries(self) -> dict | None:
        """{"pending": [...], "done": [...]}; None on a server without expiries (a real Toxiproxy)."""
        response = self._call("GET", EXPIRIES_PATH, ok=(404,))
        return None if response.status_code == 404 else response.json()

    # -- server --------------------------------------------------------------
    def version(self) -> str:
        """The server version ("2.12.0"); JSON since Toxiproxy 2.7, plain text before."""
        response = self._call("GET", "/version")
        try:
            return str(response.json()["version"])
        except (ValueError, KeyError, TypeError):
            return response.text.strip()

    def info(self) -> dict | None:
        """cachestorm's proxy: its facts ({"cachestorm": version, "fastpath": ..., "sockmap": ...});
        a real Toxiproxy (no such route): None."""
        response = self._call("GET", INFO_PATH, ok=(404,))
        try:
            body = response.json() if response.status_code == 200 else None
        except ValueError:
            return None
        return body if isinstance(body, dict) and "cachestorm" in body else None

    def is_ours(self) -> bool:
        """Whether the server is cachestorm's proxy (supports redis_write_fail, duration, slow_open)."""
        return self.info() is not None


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
        if isinstance(body, dict) and "error" in body:
            return str(body["error"])
    except ValueError:
        pass
    return " ".join(response.text.split())[:200] or response.reason_phrase
