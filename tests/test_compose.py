"""docker-compose.yml must wire the same topology the CLI expects (no Docker engine here: read the file)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from cachestorm.stack import POSTGRES_PROXY, REDIS_PROXY
from cachestorm.stack.servers import DATABASE

REPO = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def published(service: str) -> dict[int, int]:
    """container port -> host port; every published port must be bound to 127.0.0.1."""
    result = {}
    for spec in SERVICES[service].get("ports", []):
        host_ip, host_port, container_port = spec.split(":")
        assert host_ip == "127.0.0.1", f"{service} publishes {spec} beyond loopback"
        result[int(container_port)] = int(host_port)
    return result


def test_services_present():
    assert {"redis", "postgres", "toxiproxy", "target", "locust"} <= set(SERVICES)


def test_toxiproxy_proxies_match_cli_names_and_upstreams():
    mount = SERVICES["toxiproxy"]["volumes"][0].split(":")[0]
    proxies = {p["name"]: p for p in json.loads((REPO / mount).read_text())}
    assert set(proxies) == {REDIS_PROXY, POSTGRES_PROXY}
    assert proxies[REDIS_PROXY]["upstream"] == "redis:6379"
    assert proxies[POSTGRES_PROXY]["upstream"] == "postgres:5432"
    ports = published("toxiproxy")
    for proxy in proxies.values():
        listen_port = int(proxy["listen"].rsplit(":", 1)[1])
        assert listen_port in ports, f"proxy {proxy['name']} listens on {listen_port}, not published"
    assert 8474 in ports and ports[8474] == 8474


def test_postgres_database_and_stats_match_the_embedded_stack():
    env = SERVICES["postgres"]["environment"]
    assert env["POSTGRES_DB"] == DATABASE
    assert "shared_preload_libraries=pg_stat_statements" in SERVICES["postgres"]["command"]


def test_target_goes_through_toxiproxy():
    command = SERVICES["target"]["command"]
    redis_url = command[command.index("--redis-url") + 1]
    postgres_url = command[command.index("--postgres-url") + 1]
    assert urlsplit(redis_url).hostname == "toxiproxy" and urlsplit(redis_url).port == 26379
    assert urlsplit(postgres_url).hostname == "toxiproxy" and urlsplit(postgres_url).port == 25432
    assert urlsplit(postgres_url).path.lstrip("/") == DATABASE


def test_target_command_parses_with_the_targets_cli():
    from targets.settings import parse_settings

    command = SERVICES["target"]["command"]
    settings = parse_settings(command[3:])
    assert settings.port == 8000


def test_locustfile_exists_and_hits_the_target():
    command = SERVICES["locust"]["command"]
    assert (REPO / command[command.index("-f") + 1]).exists()
    assert command[command.index("--host") + 1] == "http://target:8000"


def test_readme_points_the_cli_at_the_published_ports():
    readme = (REPO / "README.md").read_text()
    redis_port = published("redis")[6379]
    postgres_port = published("postgres")[5432]
    assert f"--redis-url redis://127.0.0.1:{redis_port}/0" in readme
    assert re.search(rf"--postgres-url postgresql://postgres@127\.0\.0\.1:{postgres_port}/{DATABASE}", readme)
    assert "--toxiproxy-url http://127.0.0.1:8474" in readme
