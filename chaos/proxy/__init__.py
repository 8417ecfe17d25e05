"""cachestorm's Toxiproxy-compatible fault proxy (API server, proxies, toxics)."""

# GET: what the server is (cachestorm's proxy, engines); Toxiproxy has no such route, so a 404
# there means a real Toxiproxy. /version stays exactly Toxiproxy's.
INFO_PATH = "/cachestorm"
