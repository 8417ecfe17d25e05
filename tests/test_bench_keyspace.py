"""bench keyspace's own arithmetic, on a made-up run folder (the benchmark itself is run by hand)."""

from __future__ import annotations

import json
import os

from cachestorm.reports.history import write_history

from cachestorm.bench import keyspace
from tests.test_checker import op


def test_phases_come_from_the_journal_the_histories_and_the_target_log(tmp_path):
    ops = [op("profiles:1", "read", 0, 0.1), op("profiles:2", "read", -0.5, 0.1)]  # start_wall 1.7e9 + start
    write_history(tmp_path / "histories" / "w1-1.tsv", ops)
    (tmp_path / "journal.jsonl").write_text(
        json.dumps({"what": "warm cache", "start": 10.0, "end": 12.5}) + "\n"
        + json.dumps({"what": "truth from postgres", "start": 20.0, "end": 20.25}) + "\n")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "target-1.log").write_text("cachestorm target: seeded 1000 rows of profiles in 1.50 s\n")
    assert keyspace._first_request(tmp_path) == 1.7e9 - 0.5
    assert keyspace._steps(tmp_path) == {"warm cache": 2.5, "truth from postgres": 0.25}
    assert keyspace._seed_seconds(tmp_path) == 1.5


def test_the_sampler_sees_this_process(capsys):
    with keyspace.Sampler(os.getpid(), {}) as sampler:
        sum(range(2_000_000))
    assert sampler.peak["run"] > 1_000_000 and "run" in sampler.cpu()
    rounds = [{"keys": k, "round": "seeded", "to_first_request_s": 1.0 + k / 1e6, "seed_s": None, "warm_s": k / 1e6,
               "startup_s": 1.0, "truth_s": 0.1, "peak_rss": {"run": 50e6 + k * 10}, "cpu_s": {"run": 1.0},
               "truth_bytes": 100, "load_average": 1.0} for k in (10_000, 1_000_000)]
    keyspace.print_table(rounds)
    out = capsys.readouterr().out
    assert "growth per key (10,000 -> 1,000,000 keys)" in out and "10.0 bytes" in out and "1.00 µs" in out
