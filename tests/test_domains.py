"""One spec per domain (cachestorm/core/domains.py): what the targets serve, the traffic requests, chaos touches
and the conductor reads back as the truth, on the real stack with real targets and real Locust."""

from __future__ import annotations

import contextlib
import csv
import subprocess
import sys
from urllib.parse import urlsplit

import httpx
import pytest
from cachestorm.targets.domains import SERVICES, load_domain
from cachestorm.targets.settings import TargetSettings
from cachestorm.targets.testing import running_target
from cachestorm.traffic import locustfile
from cachestorm.traffic.recording import read_history
from cachestorm.traffic.stub_server import DOMAIN_OF_RESOURCE

from cachestorm.conductor import read_truth
from cachestorm.core.domains import DOMAINS, redis_key
from cachestorm.core.errors import CachestormError
from cachestorm.core.runfolder import RunFolder

ROWS = 30


def test_every_spec_has_a_service_and_a_locustfile_of_its_name():
    assert set(SERVICES) == set(DOMAINS)
    for name, spec in DOMAINS.items():
        assert spec.name == name and load_domain(name, None).spec is spec
        assert locustfile(name).exists()
    assert len({spec.resource for spec in DOMAINS.values()}) == len(DOMAINS) == len(DOMAIN_OF_RESOURCE)
    assert len({spec.key_prefix for spec in DOMAINS.values()}) == len(DOMAINS)


def test_unknown_domain_is_one_line_naming_the_known_ones():
    with pytest.raises(CachestormError, match="--domain 'weather' is unknown; choose one of profiles, catalog"):
        load_domain("weather", None)


def test_a_name_that_is_no_domain_is_a_key_prefix_of_your_own():
    assert redis_key("catalog", 7) == DOMAINS["catalog"].key(7) and redis_key("mine", "*") == "mine:*"


def _redis_db(url: str, db: int) -> str:
    return urlsplit(url)._replace(path=f"/{db}").geturl()


def _probe_path(spec) -> str:
    return spec.path("1/read") if spec.per_field else spec.path(1)  # permissions: /<resource>/<user>/<perm>


def _keys(stack, db: int) -> set[str]:
    import redis

    client = redis.Redis.from_url(_redis_db(stack.redis_url, db))
    try:
        return {key.decode() for key in client.scan_iter(count=1000)}
    finally:
        client.close()


@pytest.mark.slow
def test_each_domain_is_served_requested_and_read_back_as_its_spec_says(stack, redis_client, tmp_path):
    specs = list(DOMAINS.values())
    with contextlib.ExitStack() as running:
        targets = {}
        for db, spec in enumerate(specs, start=1):  # one Redis database each: every key there is the domain's
            settings = TargetSettings(domain=spec.name, redis_url=_redis_db(stack.redis_proxy_url, db),
                                      postgres_url=stack.postgres_proxy_url, rows=ROWS, recompute_ms=1, ttl=600,
                                      instance_id=f"spec-{spec.name}", flush_interval=0.5)  # entries outlive the test
            targets[spec.name] = running.enter_context(running_target(settings))
        for db, spec in enumerate(specs, start=1):  # the spec's route answers and its entry lands at the spec's key
            response = httpx.get(targets[spec.name].base_url + _probe_path(spec), timeout=10)
            assert response.status_code == 200, (spec.name, response.text)
            assert _keys(stack, db) == {spec.key(1)}, spec.name
        locusts = {}
        for spec in specs:
            out = tmp_path / spec.name
            out.mkdir()
            locusts[spec.name] = subprocess.Popen(
                [sys.executable, "-m", "locust", "-f", str(locustfile(spec.name)), "--headless",
                 "--host", targets[spec.name].base_url, "-u", "2", "-r", "2", "-t", "3s", "--only-summary",
                 "--csv", str(out / "stats"), "--run-dir", str(out), "--keys", str(ROWS), "--hot-keys", "5",
                 "--history-sample", "1", "--seed", "3"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        outputs = {name: process.communicate(timeout=120)[0] for name, process in locusts.items()}
    for db, spec in enumerate(specs, start=1):
        assert locusts[spec.name].returncode == 0, outputs[spec.name][-2000:]
        out = tmp_path / spec.name
        with open(out / "stats_stats.csv") as handle:
            names = {row["Name"] for row in csv.DictReader(handle)} - {"Aggregated"}
        assert names and all(name.startswith(f"/{spec.resource}/") for name in names), (spec.name, names)
        rows = [row for path in (out / "histories").glob("*.tsv") for row in read_history(path)]
        assert len(rows) > 10 and {row["status"] for row in rows} == {"200"}, (spec.name, rows[:3])  # no 404 routes
        keys = _keys(stack, db)
        assert keys & {spec.key(i) for i in range(1, ROWS + 1)}, (spec.name, sorted(keys)[:10])
        strays = {key for key in keys if not key.startswith(spec.key("")) and not key.startswith("wb:")}
        assert not strays, (spec.name, strays)  # wb: is write-behind's own bookkeeping
        truth = read_truth(stack.postgres_url, spec.name, out)  # the rows the histories in `out` name
        assert truth["versions"] and all(item.split(":")[0] == spec.name for item in truth["versions"])
        assert all(len(item.split(":")) == (3 if spec.per_field else 2) for item in truth["versions"])
        assert bool(truth["counters"]) == spec.counter


HOT_KEYS_GONE = """\
name: catalog-hot-keys
steady_state: {interval: 1s, probes: []}
method:
  - {fault: hot-key-expiry, at: 1s, settings: {count: 3, mode: evict}}
deviation: continue
"""


@pytest.mark.slow
def test_hot_key_fault_from_plain_locust_evicts_the_catalog_keys(stack, redis_client, tmp_path, cli_env):
    spec = DOMAINS["catalog"]
    settings = TargetSettings(domain=spec.name, strategy="cache-aside", redis_url=stack.redis_proxy_url,
                              postgres_url=stack.postgres_proxy_url, rows=ROWS, recompute_ms=1,
                              instance_id="hot-catalog")
    (tmp_path / "exp.yaml").write_text(HOT_KEYS_GONE)
    with running_target(settings) as target:
        assert httpx.post(target.base_url + "/prefill", json={"keys": ROWS}, timeout=30).status_code == 200
        assert all(redis_client.exists(spec.key(i)) for i in (1, 2, 3))
        result = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(locustfile(spec.name)), "--headless", "--host", target.base_url,
             "-u", "1", "-r", "1", "-t", "3s", "--only-summary", "--keys", str(ROWS),
             "--experiment", "exp.yaml", "--run-dir", "run", "--chaos-ledger", "ledger.jsonl",
             "--redis-admin-url", stack.redis_url, "--postgres-admin-url", stack.postgres_url,
             "--proxy-api-url", stack.proxy_api_url],
            cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    [fault] = [r for r in RunFolder(tmp_path / "run").journal_records() if r["kind"] == "fault"]
    assert fault["outcome"] == "ok", fault
    details = fault["details"]
    assert details["fault"] == "hot-key-expiry" and details["keys"] == 3, details  # 0 under the prefix "products"
