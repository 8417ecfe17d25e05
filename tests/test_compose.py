"""docker-compose.yml must wire the same topology the CLI expects (no Docker engine here: read the file)."""

from __future__ import annotations

import fnmatch
import io
import json
import os
import re
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
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
    from cachestorm.targets.settings import parse_settings

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


# ---------------------------------------------------------------- start-up order, pins, build context

EXACT_TAG = re.compile(r"^[\w./-]+(:\d+\.\d+\.\d+(-[\w.]+)?|@sha256:[0-9a-f]{64})$")
EXACT_POSTGRES_TAG = re.compile(r"^postgres:\d+\.\d+(-[\w.]+)?$")  # since 10, PostgreSQL's versions are MAJOR.MINOR


def test_images_are_pinned_to_exact_versions():
    images = [s["image"] for s in SERVICES.values() if "image" in s]
    built = [name for name, s in SERVICES.items() if "build" in s]
    assert len(images) + len(built) == len(SERVICES)
    bases = re.findall(r"^FROM\s+(\S+)", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert images and bases
    for image in images + bases:
        assert EXACT_TAG.match(image) or EXACT_POSTGRES_TAG.match(image), f"{image} is not pinned to an exact version"
    assert not EXACT_POSTGRES_TAG.match("postgres:17") and not EXACT_TAG.match("redis:7.4")


def test_every_dependency_waits_for_a_healthy_service():
    for name, service in SERVICES.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on must name a condition"
        for dependency, condition in depends.items():
            assert condition == {"condition": "service_healthy"}, (name, dependency)
            assert "healthcheck" in SERVICES[dependency], f"{name} waits for {dependency}, which has no healthcheck"
    assert set(SERVICES["toxiproxy"]["depends_on"]) == {"redis", "postgres"}
    assert set(SERVICES["target"]["depends_on"]) == {"toxiproxy"}
    assert set(SERVICES["locust"]["depends_on"]) == {"target"}


def test_target_healthcheck_asks_its_healthz():
    test = SERVICES["target"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    compile(test[3], "healthcheck", "exec")
    port = SERVICES["target"]["command"][SERVICES["target"]["command"].index("--port") + 1]
    assert f"http://127.0.0.1:{port}/healthz" in test[3]


# a clone with shared/ beside it (CI), or a worktree one folder further down
TOXIPROXY_SERVER = Path(os.environ.get("CACHESTORM_TOXIPROXY_SERVER") or next(
    (path for path in (base / "shared" / "toxiproxy" / "toxiproxy-server" for base in (REPO.parent, REPO.parent.parent))
     if path.exists()), REPO.parent / "shared" / "toxiproxy" / "toxiproxy-server"))


def test_toxiproxy_healthcheck_passes_only_once_the_config_is_loaded(tmp_path):
    """The image (FROM scratch) has only /toxiproxy and /toxiproxy-cli: run its healthcheck against the
    real server, with our copy of the CLI standing in for /toxiproxy-cli."""
    test = SERVICES["toxiproxy"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "/toxiproxy-cli"]
    mount = SERVICES["toxiproxy"]["volumes"][0].split(":")[0]
    config = json.loads((REPO / mount).read_text())
    assert test[-2:] == ["inspect", config[-1]["name"]]  # the last proxy the config creates
    cli = TOXIPROXY_SERVER.with_name("toxiproxy-cli")
    if not (TOXIPROXY_SERVER.exists() and cli.exists()):
        pytest.skip(f"no real Toxiproxy at {TOXIPROXY_SERVER} (set CACHESTORM_TOXIPROXY_SERVER)")
    from cachestorm.core.processes import free_port

    port = free_port()
    argv = [str(cli), *test[2:]]
    argv[argv.index("--host") + 1] = f"http://127.0.0.1:{port}"
    assert subprocess.run(argv, capture_output=True, timeout=30).returncode != 0  # nothing runs yet
    local = [{**proxy, "listen": "127.0.0.1:0"} for proxy in config]
    (tmp_path / "toxiproxy.json").write_text(json.dumps(local))
    server = subprocess.Popen([str(TOXIPROXY_SERVER), "-host", "127.0.0.1", "-port", str(port),
                               "-config", str(tmp_path / "toxiproxy.json")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(argv, capture_output=True, timeout=30).returncode != 0:
            assert server.poll() is None and time.monotonic() < deadline, "healthcheck never passed"
            time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(10)


def test_locust_run_folders_land_on_the_host():
    command = SERVICES["locust"]["command"]
    run_dir = command[command.index("--run-dir") + 1]
    mounts = [volume.split(":") for volume in SERVICES["locust"]["volumes"]]
    assert any(host == "./runs" and run_dir.startswith(container.rstrip("/") + "/") for host, container in mounts)


def test_dockerignore_keeps_the_venv_out_and_what_the_image_copies_in():
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for heavy in (".venv", ".git", "runs", ".cachestorm"):
        assert heavy in patterns
    copied = [source for line in re.findall(r"^COPY\s+(.+)$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
              for source in line.split()[:-1]]
    assert copied
    for source in copied:
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in patterns), f"{source} is ignored"


# ---------------------------------------------------------------- PostgreSQL samples under compose

def test_postgres_init_script_makes_the_samples_work(stack, tmp_path):
    """A fresh database like the image's: the scraper's samples fail until the mounted init script ran."""
    import psycopg

    from cachestorm.scrape import Scraper

    [mount] = [v.split(":") for v in SERVICES["postgres"]["volumes"] if ":/docker-entrypoint-initdb.d" in v]
    scripts = sorted((REPO / mount[0]).glob("*.sql"))
    assert scripts and mount[1] == "/docker-entrypoint-initdb.d"
    assert any(re.search(r"CREATE EXTENSION IF NOT EXISTS pg_stat_statements", s.read_text()) for s in scripts)

    name = f"compose_{uuid.uuid4().hex[:8]}"
    admin = urlsplit(stack.postgres_url)
    with psycopg.connect(stack.postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    fresh = admin._replace(path=f"/{name}").geturl()
    try:
        def sample() -> dict:
            out = io.StringIO()
            conn = Scraper(tmp_path, 0.0, {}, fresh)._pg_sample(None, out, 1.0, 1.0)
            if conn is not None:
                conn.close()
            return json.loads(out.getvalue())

        failed = sample()
        assert "pg_stat_statements" in failed["error"]
        with psycopg.connect(fresh, autocommit=True) as conn:
            for script in scripts:
                conn.execute(script.read_text())
        assert "error" not in sample() and sample()["calls"] is not None
        _report_warns_about(failed, tmp_path / "run")
    finally:
        with psycopg.connect(stack.postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def _report_warns_about(failed_sample: dict, run_dir: Path) -> None:
    """A run folder whose every PostgreSQL sample failed as `failed_sample` did: each report says so."""
    from cachestorm.reports.render import render_run
    from cachestorm.reports.synthetic import write_synthetic_run

    healthy = write_synthetic_run(run_dir.with_name("healthy"))
    render_run(healthy)
    assert json.loads((healthy / "report.json").read_text())["warnings"] == []
    assert "warning" not in (healthy / "summary.md").read_text()

    write_synthetic_run(run_dir)
    samples = [json.loads(line) for line in (run_dir / "pg_stats.jsonl").read_text().splitlines()]
    (run_dir / "pg_stats.jsonl").write_text("".join(
        json.dumps({"t": s["t"], "wall": s["wall"], "error": failed_sample["error"]}) + "\n" for s in samples))
    render_run(run_dir)
    [warning] = json.loads((run_dir / "report.json").read_text())["warnings"]
    assert warning.startswith(f"PostgreSQL sampling failed in {len(samples)} of {len(samples)} samples")
    assert "pg_stat_statements" in warning and "targets' counts only" in warning
    assert "**warning:** PostgreSQL sampling failed" in (run_dir / "summary.md").read_text()
    assert "<b>warning:</b> PostgreSQL sampling failed" in (run_dir / "report.html").read_text()


def test_report_counts_partly_failed_samples(tmp_path):
    from cachestorm.reports.warnings import run_warnings

    records = [{"t": 1.0, "calls": 5}, {"t": 2.0, "error": "connection refused"}, {"t": 3.0, "calls": 9}]
    assert run_warnings(records) == ["PostgreSQL sampling failed in 1 of 3 samples (connection refused); "
                                     "its counters have gaps"]
    assert run_warnings(records[::2]) == [] and run_warnings([]) == []
