"""Who reverts an active fault if its controller dies, and when: read back from the proxies' expiries.

The arming itself is in `Fault.apply()` (faults/base.py); the proxy side in chaos/proxy/expiry.py.
"""

from __future__ import annotations

import time

from cachestorm.chaos.toxiproxy import ToxiproxyClient, ToxiproxyError

NOT_OURS = "a real Toxiproxy (or another server without cachestorm's expiries)"


def listings(api_urls: list[str]) -> dict[str, dict | str]:
    """Each proxy API's {"pending", "done"}, or a string saying why there is none."""
    found: dict[str, dict | str] = {}
    for url in api_urls:
        try:
            with ToxiproxyClient(url, timeout=5) as client:
                found[url] = client.expiries() or NOT_OURS
        except ToxiproxyError as exc:
            found[url] = str(exc)
    return found


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def what_it_does(actions: list[dict]) -> str:
    """A listed expiry's actions in a few words (passwords are not in a listing)."""
    said = []
    for action in actions:
        if action["do"] == "redis":
            said += [" ".join(command[:4]) for command in action["commands"]]
        elif action["do"] == "signal":
            said.append(f"SIGCONT pid {action['pid']}")
        else:
            said.append(f"{action['do']} {action['proxy']}" + (f"/{action['toxic']}" if "toxic" in action else ""))
    return "; ".join(said)


def expired_by_proxy(entry: dict, found: dict[str, dict | str]) -> bool:
    """Whether the entry's proxy already ran its whole revert, successfully."""
    expiry_id = (entry.get("state") or {}).get("expiry_id")
    listing = found.get((entry.get("context") or {}).get("proxy_api_url", ""))
    return bool(expiry_id) and isinstance(listing, dict) and any(
        done["id"] == expiry_id and done["outcome"] == "ok" for done in listing["done"])


def who_reverts(entry: dict, found: dict[str, dict | str]) -> str:
    """One line for a ledger entry: the proxy's pending or finished revert, or that nobody will."""
    expiry_id = (entry.get("state") or {}).get("expiry_id")
    url = (entry.get("context") or {}).get("proxy_api_url", "")
    listing = found.get(url)
    if isinstance(listing, str):
        return f"nobody: the proxy at {url} is {listing}; `cachestorm chaos heal`"
    if not expiry_id or listing is None:
        return "nobody: no revert was handed to a proxy; `cachestorm chaos heal`"
    for pending in listing["pending"]:
        if pending["id"] == expiry_id:
            if pending.get("due_at") is not None:
                left = max(0.0, pending["due_at"] - time.time())
                return f"the proxy at {url}, at {_clock(pending['due_at'])} (in {left:.0f}s)"
            return f"the proxy at {url}, when pid {pending['owner']['pid']} exits"
    for done in listing["done"]:
        if done["id"] == expiry_id:
            return f"reverted by the proxy at {_clock(done['fired_at'])} ({done['reason']}): {done['outcome']}"
    return f"nobody: the proxy at {url} holds no revert for it (restarted?); `cachestorm chaos heal`"


def unguarded_warning(proxy_api_url: str, faults: list) -> str | None:
    """A warning before applying: which of these faults would outlive a dead controller."""
    if not proxy_api_url:
        return None
    lasting = [f.name for f in faults if not f.one_shot]
    if not lasting:
        return None
    try:
        with ToxiproxyClient(proxy_api_url, timeout=5) as client:
            ours = client.expiries() is not None
    except ToxiproxyError:
        return None  # unreachable: applying will say so
    if ours:
        cannot = [f.name for f in faults if not f.one_shot and not f.can_self_expire()]
        if not cannot:
            return None
        return (f"warning: {', '.join(cannot)} cannot expire by itself (it needs this process to undo it); "
                "if this process dies, run `cachestorm chaos heal`")
    return (f"warning: {proxy_api_url} is {NOT_OURS}: if this process dies, {', '.join(lasting)} stay(s) "
            "active until `cachestorm chaos heal`")
