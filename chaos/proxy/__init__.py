"""cachestorm's Toxiproxy-compatible fault proxy (API server, proxies, toxics)."""
