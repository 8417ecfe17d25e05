"""The experiment runner end to end against the real stack, with synthetic probe numbers."""

from __future__ import annotations

import json
import time

import pytest
from cachestorm.chaos.experiment import parse_experiment
from cachestorm.chaos.ledger import Ledger
from cachestorm.chaos.runner import ExperimentRunner

from cachestorm.core.runfolder import Journal, RunFolder
from cachestorm.stack import context_from_stack

EXPERIMENT = """\
name: e2e
steady_state:
  interval: 250ms
  settle: 1s
  probes:
    - {name: db load bounded, metric: db_queries_per_s, max: 100, window: 1s}
method:
  - {fault: hot-key-expiry, at: 0.5s, settings: {count: 10}}
  - {fault: redis-latency, at: 0.5s, for: 1.5s, settings: {latency_ms: 20}}
deviation: DEVIATION
"""


def synthetic_metrics(run_dir, storm_from: float, storm_to: float) -> None:
    """Scrapes for t = -5..10 s: 10 DB queries/s, 1,000/s inside the storm."""
    total, lines = 0.0, []
    for tenth in range(-50, 100):
        t = tenth / 10
        total += (1000 if storm_from <= t < storm_to else 10) / 10
        lines.append(json.dumps({"t": t, "wall": 0, "instance": "a",
                                 "metrics": {'cachestorm_db_queries_total{kind="read",key_class="hot"}': total}}))
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def make_runner(stack, tmp_path, deviation: str):
    journal = Journal(tmp_path / "run", t0_wall=time.time())
    ctx = context_from_stack(stack, ledger_path=str(tmp_path / "ledger.jsonl"), run_dir=str(tmp_path / "run"))
    ctx.t0_monotonic = time.monotonic()
    experiment = parse_experiment(EXPERIMENT.replace("DEVIATION", deviation), "e2e.yaml")
    return ExperimentRunner(experiment, ctx, journal), journal, ctx


class Traffic:
    """GETs through the Redis proxy until stopped, so a toxic has something to act on."""

    def __init__(self, stack):
        import threading

        import redis

        self.client = redis.Redis.from_url(stack.redis_proxy_url, socket_timeout=5, socket_connect_timeout=5)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self.done.is_set():
            try:
                self.client.get("profiles:25")
                self.client.set("hot:1", "v")
            except Exception:  # noqa: BLE001 - a fault may cut it
                pass
            self.done.wait(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join(5)
        self.client.delete("hot:1")  # leave the keys as they were
        self.client.close()


def test_timeline_probes_and_journal(stack, tmp_path, redis_client, proxy_client):
    redis_client.mset({f"profiles:{i}": "v" for i in range(1, 31)})
    runner, journal, ctx = make_runner(stack, tmp_path, "continue")
    synthetic_metrics(tmp_path / "run", storm_from=0.5, storm_to=1.5)
    with Traffic(stack):
        _run_timeline(runner, proxy_client)
    _check_timeline(runner, tmp_path, ctx, redis_client, proxy_client)


def _run_timeline(runner, proxy_client):
    runner.start()
    try:
        deadline = time.monotonic() + 3
        while not proxy_client.toxics("redis") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(proxy_client.toxics("redis")) == 1       # the latency window is open
        assert runner.wait(timeout=10)
    finally:
        runner.stop()                                        # no fault outlives a failed check
    runner.stop()                                            # idempotent


def _check_timeline(runner, tmp_path, ctx, redis_client, proxy_client):
    assert proxy_client.toxics("redis") == [] and Ledger(ctx.ledger_path).active() == []
    assert redis_client.dbsize() == 20
    summary = runner.summary()
    assert summary["hypothesis"] == "deviated" and not summary["aborted"] and summary["errors"] == []
    phases = {(p["details"]["phase"], p["outcome"]) for p in summary["probes"]}
    assert ("before", "ok") in phases and ("during", "deviated") in phases and ("after", "ok") in phases
    records = RunFolder(tmp_path / "run").journal_records()
    faults = {r["details"]["fault"]: r for r in records if r["kind"] == "fault"}
    assert faults["hot-key-expiry"]["details"]["keys"] == 10
    assert faults["hot-key-expiry"]["details"]["key_ids"] == [str(i) for i in range(1, 11)]
    latency = faults["redis-latency"]
    assert latency["outcome"] == "ok" and latency["details"]["ended_by"] == "end of window"
    # what each fault touched, counted where it acted (Redis' answer, the proxy's counters)
    assert faults["hot-key-expiry"]["details"]["touched"]["count"] == 10
    assert latency["details"]["touched"]["count"] >= 1 and latency["details"]["reverted"]["counted"]["bytes"] > 0
    # never early nor short; late/long only by scheduling noise (generous for a loaded 2-core box)
    # the window is the timeline's (0.5 s + 1.5 s): a late start on a busy machine shortens it, the end holds
    assert 0.4 <= latency["t_start"] <= 1.5
    assert 1.9 <= latency["t_end"] <= 3.0 and latency["t_end"] - latency["t_start"] >= 0.5
    assert any(r["kind"] == "probe" for r in records)


def test_deviation_abort_rolls_back_early_and_sets_the_event(stack, tmp_path, redis_client, proxy_client):
    runner, journal, ctx = make_runner(stack, tmp_path, "abort")
    synthetic_metrics(tmp_path / "run", storm_from=0.0, storm_to=10.0)   # deviates at the first check
    aborted = []
    runner.on_abort = lambda: aborted.append(True)
    runner.start()
    try:
        assert runner.abort_event.wait(timeout=5)
    finally:
        runner.stop()
    assert aborted == [True] and proxy_client.toxics("redis") == []
    records = RunFolder(tmp_path / "run").journal_records()
    latency = [r for r in records if r["details"].get("fault") == "redis-latency"]
    # the abort can land before the fault's window opens (the storm is on from the start): then the
    # fault must never have been applied; else it must have been cut short by the abort
    assert any(r["kind"] == "probe" and r["outcome"] == "deviated" for r in records)
    assert latency and latency[0]["details"]["ended_by"] == "hypothesis deviated (abort)"
    if latency[0]["outcome"] == "failed":  # aborted before its window: said so, so the run fails loudly
        assert latency[0]["details"]["error"].startswith("never applied: the steady-state hypothesis deviated")
    else:
        assert latency[0]["t_end"] < 1.9
    assert Ledger(ctx.ledger_path).active() == []


def test_stop_mid_fault_reverts_everything(stack, tmp_path, redis_client, proxy_client):
    runner, journal, ctx = make_runner(stack, tmp_path, "continue")
    runner.start()
    try:
        deadline = time.monotonic() + 3
        while not proxy_client.toxics("redis") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proxy_client.toxics("redis")
    finally:
        runner.stop()
    assert proxy_client.toxics("redis") == [] and Ledger(ctx.ledger_path).active() == []
    ended = [r["details"]["ended_by"] for r in RunFolder(tmp_path / "run").journal_records() if r["kind"] == "fault"]
    assert "end of run" in ended


def test_a_remote_address_is_refused_before_anything_runs(stack, tmp_path):
    journal = Journal(tmp_path / "run")
    ctx = context_from_stack(stack, ledger_path=str(tmp_path / "l"), redis_url="redis://192.0.2.1:6379/0")
    experiment = parse_experiment(EXPERIMENT.replace("DEVIATION", "continue"), "e2e.yaml")
    with pytest.raises(Exception, match="not a loopback address"):
        ExperimentRunner(experiment, ctx, journal)


def test_a_fault_the_run_ended_before_is_recorded_as_never_applied(stack, tmp_path):
    """The conductor refuses a fault scheduled after the load; one the run still ended before (Locust
    stopped early, a short run) is a failed fault record, so the run is marked failed, not "ok"."""
    journal = Journal(tmp_path / "run", t0_wall=time.time())
    ctx = context_from_stack(stack, ledger_path=str(tmp_path / "ledger.jsonl"), run_dir=str(tmp_path / "run"))
    ctx.t0_monotonic = time.monotonic()
    experiment = parse_experiment("name: late\nmethod:\n  - {fault: redis-latency, at: 30s, for: 1s, "
                                  "settings: {latency_ms: 5}}\n", "late.yaml")
    runner = ExperimentRunner(experiment, ctx, journal).start()
    time.sleep(0.3)
    runner.stop()
    [failed] = runner.failed_faults()
    assert failed["outcome"] == "failed" and "never applied" in failed["details"]["error"]
    assert [r["outcome"] for r in RunFolder(tmp_path / "run").journal_records() if r["kind"] == "fault"] == ["failed"]


NOTHING = """\
name: nothing
method:
  - {fault: FAULT, at: 0.2s, for: 0.6s, settings: SETTINGS}
"""


def run_alone(stack, tmp_path, fault: str, settings: str, domain: str = "profiles"):
    journal = Journal(tmp_path / "run", t0_wall=time.time())
    ctx = context_from_stack(stack, ledger_path=str(tmp_path / "ledger.jsonl"), run_dir=str(tmp_path / "run"))
    ctx.domain = domain
    ctx.t0_monotonic = time.monotonic()
    text = NOTHING.replace("FAULT", fault).replace("SETTINGS", settings)
    if fault in ("hot-key-expiry", "key-pattern-expiry"):  # one-shot: a `for` is refused
        text = text.replace(", for: 0.6s", "")
    runner = ExperimentRunner(parse_experiment(text, "nothing.yaml"), ctx, journal)
    runner.start()
    try:
        assert runner.wait(timeout=15)
    finally:
        runner.stop()
    return runner


@pytest.mark.parametrize("fault, settings, says", [
    ("hot-key-expiry", "{domain: catalog}",
     "hot-key-expiry at 0.2 s expired 0 keys: domain catalog has no keys on a profiles run"),
    ("key-pattern-expiry", "{pattern: 'nothing-here:*'}",
     "key-pattern-expiry at 0.2 s deleted 0 keys: no key matched 'nothing-here:*'"),
    ("redis-command-latency", "{latency_ms: 50, commands: [SET]}",
     "redis-command-latency at 0.2 s faulted 0 commands: no SET command passed proxy redis during the window"),
    ("redis-latency", "{latency_ms: 50}",
     "redis-latency at 0.2 s reached 0 connections (latency toxic): no data passed proxy redis during the window"),
])
def test_a_fault_that_touched_nothing_fails_with_one_line(stack, tmp_path, redis_client, proxy_client,
                                                          fault, settings, says):
    redis_client.flushdb()
    runner = run_alone(stack, tmp_path, fault, settings)
    failed = runner.failed_faults()
    assert [f["details"]["error"] for f in failed] == [says]
    assert failed[0]["outcome"] == "failed" and failed[0]["details"]["touched"]["count"] == 0
    assert says in runner.summary()["errors"]
    assert proxy_client.toxics("redis") == [] and Ledger(str(tmp_path / "ledger.jsonl")).active() == []


def test_a_fault_that_touched_something_passes_with_its_count(stack, tmp_path, redis_client, proxy_client):
    redis_client.flushdb()
    redis_client.mset({f"catalog:{i}": '{"x":1,"v":1}' for i in range(1, 4)})
    runner = run_alone(stack, tmp_path, "hot-key-expiry", "{domain: catalog, count: 5}")
    assert runner.failed_faults() == []
    record = next(r for r in runner.summary()["faults"] if r["kind"] == "fault")
    assert record["details"]["touched"] == {"count": 3, "unit": "keys expired",
                                            "source": "Redis (keys found and changed)"}
    redis_client.flushdb()
    with Traffic(stack):
        time.sleep(0.1)
        runner = run_alone(stack, tmp_path / "b", "redis-command-latency", "{latency_ms: 5, commands: [GET]}")
    assert runner.failed_faults() == []
    record = next(r for r in runner.summary()["faults"] if r["kind"] == "fault")
    assert record["details"]["reverted"]["commands_faulted"] >= 1


PROBED = """\
name: probed
steady_state:
  interval: 200ms
  settle: 0.3s
  probes:
    - {name: errors stay rare, metric: error_rate, max: 0.5, window: 1s}
method:
  - {fault: flush-cache, at: 0.3s}
"""


def test_a_probe_without_data_is_unknown_and_the_hypothesis_not_verified(stack, tmp_path, redis_client):
    redis_client.set("profiles:1", "v")
    journal = Journal(tmp_path / "run", t0_wall=time.time())
    ctx = context_from_stack(stack, ledger_path=str(tmp_path / "ledger.jsonl"), run_dir=str(tmp_path / "run"))
    ctx.t0_monotonic = time.monotonic()
    runner = ExperimentRunner(parse_experiment(PROBED, "probed.yaml"), ctx, journal)  # no metrics.jsonl: no data
    runner.start()
    try:
        assert runner.wait(timeout=10)
    finally:
        runner.stop()
    summary = runner.summary()
    assert {p["outcome"] for p in summary["probes"]} == {"unknown"}
    assert summary["hypothesis"] == "not_verified"
    assert summary["unknown_probes"] == ["errors stay rare (before)", "errors stay rare (during)",
                                         "errors stay rare (after)"]
    records = RunFolder(tmp_path / "run").journal_records()
    verdict = [r for r in records if r["kind"] == "hypothesis"]
    assert [r["outcome"] for r in verdict] == ["not_verified"]
    assert "no data for probe errors stay rare (before)" in verdict[0]["details"]["error"]
    from cachestorm.core.runfiles import first_failure
    assert first_failure(records)["outcome"] == "not_verified"
