"""truth.json holds only the rows the histories name: against real PostgreSQL, the checker finds the
same with it as with every row of the table (lost writes, counters, a reused stack's start counts)."""

from __future__ import annotations

import json

import psycopg
from cachestorm.reports.checker import Truth, check_history
from cachestorm.reports.history import read_run_history, write_history

from cachestorm.conductor import read_truth
from cachestorm.core.domains import DOMAINS
from tests.test_checker import op

SPEC = DOMAINS["counters"]
ROWS = 2000


def full_truth(url: str) -> dict:
    """What truth.json held before: every row."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(SPEC.truth_sql).fetchall()
    return {"versions": {f"counters:{r[0]}": r[1] for r in rows}, "counters": {str(r[0]): r[2] for r in rows}}


def test_truth_of_the_named_rows_gives_the_checker_the_same_findings(stack, tmp_path):
    from cachestorm.targets.db import prepare_database

    url = stack.postgres_url
    prepare_database(url, SPEC.table, SPEC.seed_sql, ROWS, reset=True)
    with psycopg.connect(url, autocommit=True) as conn:  # earlier runs on this stack left counts behind
        conn.execute("UPDATE counters SET data = jsonb_build_object('count', 4), version = 2 WHERE id IN (5, 6, 1500)")
    start_small, start_full = read_truth(url, SPEC.name)["counters"], full_truth(url)["counters"]
    assert start_small == {"5": 4, "6": 4, "1500": 4} and len(start_full) == ROWS
    with psycopg.connect(url, autocommit=True) as conn:  # this run: some increments land, some do not
        conn.execute("UPDATE counters SET data = jsonb_build_object('count', (data->>'count')::int + 3), "
                     "version = version + 1 WHERE id IN (5, 7, 9, 1200)")
        conn.execute("UPDATE counters SET version = 9 WHERE id = 11")
    ops = [op("counters:5", "incr", 0, 0.1, rid="a", value=3),  # landed, on top of an earlier run's 4
           op("counters:7", "incr", 0, 0.1, rid="b", value=5),  # 2 lost
           op("8", "incr", 0, 0.1, rid="c", value=1),  # lost: never reached the row (no prefix in the key)
           op("counters:9", "incr", 0, 1, status="timeout", rid="d", value=3),  # indeterminate, landed
           op("counters:6", "read", 0, 0.1, 4),
           op("counters:11", "write", 0, 0.1, 12),  # an acknowledged version above the final 9: lost
           op("counters:12", "write", 0, 0.1, 1)]
    write_history(tmp_path / "histories" / "w1-1.tsv", ops)
    small, full = read_truth(url, SPEC.name, tmp_path), full_truth(url)
    assert set(small["versions"]) == {f"counters:{i}" for i in (1, 5, 6, 7, 8, 9, 11, 12)}  # named, and the first
    assert len(full["versions"]) == ROWS
    history = read_run_history(tmp_path)
    found = [check_history(history, Truth(versions=t["versions"], counters=t["counters"], counters_start=start),
                           domain=SPEC.name)["findings"]
             for t, start in ((small, start_small), (full, start_full))]
    assert json.dumps(found[0], sort_keys=True) == json.dumps(found[1], sort_keys=True)
    assert found[0]["lost_writes"]["count"] == 1 and found[0]["counters"]["lost"]["count"] == 2
    assert found[0]["counters"]["checked"] and found[0]["lost_writes"]["checked"]


def test_truth_of_a_run_without_histories_still_checks(stack, tmp_path):
    """No history: the first row keeps the truth non-empty, so the checker says 'checked' as before."""
    from cachestorm.targets.db import prepare_database

    prepare_database(stack.postgres_url, SPEC.table, SPEC.seed_sql, 50, reset=True)
    truth = read_truth(stack.postgres_url, SPEC.name, tmp_path)
    assert truth["versions"] == {"counters:1": 1} and truth["counters"] == {"1": 0}
