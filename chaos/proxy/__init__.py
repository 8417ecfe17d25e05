"""cachestorm's Toxiproxy-compatible fault proxy (API server, proxies, toxics).

The facts clients need are here, so a client (also one inside Locust, where importing the server's
asyncio modules stalls gevent's loop) never imports the server.
"""

import ipaddress

EXPIRIES_PATH = "/cachestorm/expiries"   # the route of the proxy's own reverts (chaos/proxy/expiry.py)
OWNER_NOT_VISIBLE = 409                  # its answer for an owner process the proxy cannot watch


def loopback_host(host: str) -> bool:
    """The Redis hosts the proxy's reverts may connect to: localhost or a loopback IP (no lookups)."""
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False

# GET: what the server is (cachestorm's proxy, engines); Toxiproxy has no such route, so a 404
# there means a real Toxiproxy. /version stays exactly Toxiproxy's.
INFO_PATH = "/cachestorm"
