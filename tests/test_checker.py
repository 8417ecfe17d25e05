"""Known-answer tests for the consistency checker on small synthetic histories."""

import json

import pytest
from cachestorm.reports.bench_checker import main as bench_main
from cachestorm.reports.checker import Truth, check_history, check_run
from cachestorm.reports.history import read_histories, read_run_history, write_history

from cachestorm.core.errors import CachestormError

S = 1_000_000_000  # ns per second


def op(key, kind, start_s, end_s, version=None, status=200, source="", user="", rid="", value=None):
    return (key, kind, int(start_s * S), None if end_s is None else int(end_s * S), 1.7e9 + start_s,
            status, version, source, user, rid, value)


def check(tmp_path, operations, truth=None, **kwargs):
    path = write_history(tmp_path / "histories" / "w1-1.tsv", operations)
    return check_history(read_histories([path]), truth, **kwargs)


def test_clean_history_reports_nothing(tmp_path):
    ops = [op("1", "write", 0, 0.1, 1, rid="a"), op("1", "read", 0.2, 0.3, 1, source="hit"),
           op("1", "write", 1.0, 1.1, 2, user="u1", rid="b"),
           op("1", "read", 1.05, 1.2, 1, source="hit"),  # concurrent with the write: either is fine
           op("1", "read", 1.2, 1.3, 2, source="miss", user="u1"),
           op("c1", "incr", 2, 2.1, status=200, rid="i1", value=3)]
    result = check(tmp_path, ops, Truth(versions={"1": 2}, counters={"c1": 3}), staleness_bound_s=1.0)
    assert result["anomalies"] == 0
    findings = result["findings"]
    assert findings["stale_reads"]["count"] == 0 and findings["stale_reads"]["reads"] == 3
    assert all(row["all_consistent"] and row["display"] == "all 3 reads (≥ 0.48 nines)"
               for row in findings["consistency_nines"])
    assert findings["read_your_writes"]["reads_checked"] == 1
    assert findings["counters"]["checked"] and findings["counters"]["db_total"] == 3


def test_stale_read_staleness_is_from_the_oldest_newer_ack(tmp_path):
    ops = [op("k", "write", 0, 0.1, 1), op("k", "write", 0.5, 1.0, 2), op("k", "write", 1.5, 2.0, 3),
           op("k", "read", 4.0, 4.1, 1, source="stale", rid="r1"),  # superseded since v2 ack at 1.0 -> 3 s
           op("k", "read", 4.0, 4.1, 2, source="hit", rid="r2"),  # superseded since v3 ack at 2.0 -> 2 s
           op("k", "read", 4.0, 4.1, 3, source="hit")]
    result = check(tmp_path, ops, staleness_bound_s=2.5, within_s=(0.0, 2.0, 5.0))
    stale = result["findings"]["stale_reads"]
    assert stale["count"] == 2
    assert stale["staleness_s"]["max"] == pytest.approx(3.0)
    assert stale["staleness_s"]["p50"] == pytest.approx(2.0)
    assert stale["over_bound"] == 1
    worst = stale["examples"][0]
    assert (worst["key"], worst["op"], worst["version"], worst["source"], worst["request_id"]) == (
        "k", "read", 1, "stale", "r1")
    assert worst["newest_acked_version"] == 3 and worst["start_ns"] == 4 * S
    rows = {row["within_s"]: row for row in result["findings"]["consistency_nines"]}
    assert rows[0.0]["consistent"] == 1 and rows[0.0]["total"] == 3
    assert rows[2.0]["consistent"] == 2  # staleness 2.0 counts as consistent within 2 s
    assert rows[5.0]["all_consistent"]


def test_out_of_order_acks_use_the_earliest_ack_of_any_newer_version(tmp_path):
    ops = [op("k", "write", 0, 0.1, 1), op("k", "write", 0.5, 2.0, 2), op("k", "write", 0.6, 1.0, 3),
           op("k", "read", 3.0, 3.1, 1)]
    stale = check(tmp_path, ops)["findings"]["stale_reads"]
    assert stale["count"] == 1 and stale["staleness_s"]["max"] == pytest.approx(2.0)
    assert stale["over_bound"] is None  # no declared bound


def test_unacknowledged_and_concurrent_writes_do_not_make_reads_stale(tmp_path):
    ops = [op("k", "write", 0, 0.1, 1), op("k", "write", 1.0, 5.0, 2),  # acked after the read started
           op("k", "write", 1.0, 1.5, 3, status="timeout"), op("k", "write", 1.0, 1.5, 4, status=503),
           op("k", "read", 2.0, 2.1, 1), op("k", "read", 2.0, 2.1, None, status=404)]
    result = check(tmp_path, ops)
    assert result["findings"]["stale_reads"]["count"] == 0 and result["reads_checked"] == 1


def test_nines_of_reads_consistent_within_m_seconds(tmp_path):
    ops = [op("k", "write", 0, 0.001, 1), op("k", "write", 0.002, 0.003, 2)]
    ops += [op("k", "read", 2.0 + n * 1e-6, 2.0 + n * 1e-6, 2) for n in range(999)]
    ops.append(op("k", "read", 2.003, 2.004, 1))  # 2 s stale
    rows = check(tmp_path, ops, within_s=(0.0, 1.0, 10.0))["findings"]["consistency_nines"]
    assert rows[0]["fraction"] == pytest.approx(0.999) and rows[0]["nines"] == pytest.approx(3.0)
    assert rows[1]["nines"] == pytest.approx(3.0)
    assert rows[2]["all_consistent"] and rows[2]["nines"] is None and rows[2]["nines_lower_bound"] == 3.0
    json.dumps(rows)  # infinity never leaks into JSON


def test_read_your_writes_violation_only_for_the_writer(tmp_path):
    ops = [op("p", "write", 0, 0.1, 1, user="u1"), op("p", "write", 1.0, 1.2, 2, user="u1", rid="w2"),
           op("p", "read", 1.1, 1.3, 1, user="u1", source="hit"),  # own write not yet acknowledged
           op("p", "read", 1.5, 1.6, 1, user="u1", source="hit", rid="bad"),
           op("p", "read", 1.5, 1.6, 1, user="u2", source="hit")]
    result = check(tmp_path, ops)
    ryw = result["findings"]["read_your_writes"]
    assert ryw["count"] == 1 and ryw["reads_checked"] == 2
    assert ryw["examples"][0]["request_id"] == "bad" and ryw["examples"][0]["own_acked_version"] == 2
    assert result["findings"]["stale_reads"]["count"] == 2


def test_lost_writes_against_truth_with_domain_prefix(tmp_path):
    ops = [op("1", "write", 0, 0.1, 1), op("1", "write", 1, 1.1, 2, rid="lost"),
           op("2", "write", 0, 0.1, 5), op("3", "write", 0, 0.1, 7, status="timeout")]
    truth = Truth(versions={"profiles:1": 1, "profiles:2": 5, "profiles:3": 1})
    lost = check(tmp_path, ops, truth, domain="profiles")["findings"]["lost_writes"]
    assert lost["checked"] and lost["count"] == 1 and lost["keys"] == 1
    assert lost["examples"][0]["request_id"] == "lost" and lost["examples"][0]["final_version"] == 1
    assert not check(tmp_path, ops)["findings"]["lost_writes"]["checked"]


@pytest.mark.parametrize(("db", "lost", "duplicated", "unsure"), [
    (5, 0, 0, 0),  # exactly the acknowledged increments
    (3, 1, 0, 0),  # 2 acknowledged increments missing
    (9, 0, 0, 1),  # within acked + indeterminate: cannot tell
    (10, 0, 1, 0),  # more than even the indeterminate ones explain: duplicated
])
def test_counter_reconciliation(tmp_path, db, lost, duplicated, unsure):
    ops = [op("c", "incr", 0, 0.1, rid="a", value=1), op("c", "incr", 0, 0.1, rid="b", value=2),
           op("c", "incr", 0, 1.0, status="timeout", rid="c", value=2),
           op("c", "incr", 1.1, 1.2, rid="c", value=2),  # the retry of c succeeded: one logical increment
           op("c", "incr", 2, 3, status="timeout", rid="d", value=4),
           op("c", "incr", 2, 3, status=503, rid="e", value=100)]  # refused: never applied
    counters = check(tmp_path, ops, Truth(counters={"c": db}))["findings"]["counters"]
    assert counters["acked_total"] == 5 and counters["indeterminate_total"] == 4
    assert counters["lost"]["count"] == lost and counters["duplicated"]["count"] == duplicated
    assert counters["indeterminate_keys"] == unsure
    if lost:
        assert counters["lost"]["amount"] == 2 and counters["lost"]["examples"][0]["key"] == "c"
    if duplicated:
        assert counters["duplicated"]["amount"] == 1
        assert counters["duplicated"]["examples"][0]["operation"]["op"] == "incr"


def test_counters_reconcile_only_what_this_run_added_to_keys_the_history_saw(tmp_path):
    """A reused stack carries earlier counts, and unsampled keys have DB counts the history never saw:
    neither is a duplicated increment (both were false alarms against a real write-behind run)."""
    ops = [op("c", "incr", 0, 0.1, rid="a", value=3), op("r", "read", 0, 0.1, 0)]
    truth = Truth(counters={"c": 10, "r": 4, "unsampled": 50}, counters_start={"c": 7, "r": 4, "unsampled": 20})
    counters = check(tmp_path, ops, truth)["findings"]["counters"]
    assert counters["checked"] and counters["db_total"] == 3
    assert counters["duplicated"]["count"] == 0 and counters["lost"]["count"] == 0
    truth.counters["r"] = 6  # a key the history saw only read, yet it grew: increments nobody acknowledged
    counters = check(tmp_path, ops, truth)["findings"]["counters"]
    assert counters["duplicated"]["count"] == 1 and counters["duplicated"]["examples"][0]["key"] == "r"


def test_revoked_but_granted_after_the_bound(tmp_path):
    ops = [op("u1/read", "grant", 0, 0.1, 1), op("u1/read", "revoke", 1.0, 1.1, 2, rid="rv"),
           op("u1/read", "check", 1.3, 1.35, 1, value=1),  # within the 0.5 s bound
           op("u1/read", "check", 2.0, 2.05, 1, value=1, rid="late"),  # 0.9 s after the revoke: violation
           op("u1/read", "check", 2.0, 2.05, 2, value=0),  # denied: fine
           op("u2/read", "revoke", 1.0, 1.1, 2), op("u2/read", "grant", 2.0, 2.5, 3),
           op("u2/read", "check", 3.0, 3.1, 3, value=1),  # re-granted after the revoke
           op("u3/read", "revoke", 1.0, 1.1, 2), op("u3/read", "grant", 1.5, 9.0, status="timeout"),
           op("u3/read", "check", 3.0, 3.1, 1, value=1)]  # the timed-out grant may have applied
    result = check(tmp_path, ops, staleness_bound_s=0.5)
    revoked = result["findings"]["revoked_granted"]
    assert revoked["count"] == 1 and revoked["bound_s"] == 0.5
    assert revoked["examples"][0]["request_id"] == "late"
    assert revoked["examples"][0]["since_revoke_s"] == pytest.approx(0.9)


def test_examples_are_capped_at_five(tmp_path):
    ops = [op("k", "write", 0, 0.1, 1), op("k", "write", 1, 1.1, 2)]
    ops += [op("k", "read", 2 + n, 2.1 + n, 1) for n in range(8)]
    stale = check(tmp_path, ops)["findings"]["stale_reads"]
    assert stale["count"] == 8 and len(stale["examples"]) == 5
    assert stale["examples"][0]["staleness_s"] == pytest.approx(7.9)  # worst first


def test_check_run_reads_truth_bound_and_t0(tmp_path):
    write_history(tmp_path / "histories" / "w1-1.tsv",
                  [op("1", "write", 10, 10.1, 2), op("1", "read", 12, 12.1, 1)])
    (tmp_path / "run.json").write_text(json.dumps({"t0_monotonic_ns": 10 * S, "settings": {"domain": "profiles"}}))
    (tmp_path / "truth.json").write_text(json.dumps(
        {"versions": {"profiles:1": 2}, "counters": {}, "declared_staleness_bound_s": 1.5}))
    result = check_run(tmp_path)
    stale = result["findings"]["stale_reads"]
    assert result["staleness_bound_s"] == 1.5 and stale["over_bound"] == 1
    assert stale["examples"][0]["t_start"] == pytest.approx(2.0)
    assert result["findings"]["lost_writes"]["checked"] and result["findings"]["lost_writes"]["count"] == 0


def test_history_reader_rejects_foreign_and_damaged_files(tmp_path):
    bad = tmp_path / "histories" / "x.tsv"
    bad.parent.mkdir()
    bad.write_text("key\top\n")
    with pytest.raises(CachestormError, match="expected '# cachestorm-history v1'"):
        read_run_history(tmp_path)
    path = write_history(bad, [op("1", "read", 0, 1, 1)])
    path.write_text(path.read_text() + "1\tread\t5\n")
    with pytest.raises(CachestormError, match="line 4 has 3 fields"):
        read_histories([path])


def test_history_reader_skips_torn_last_line_and_blank_lines(tmp_path):
    path = write_history(tmp_path / "w.tsv", [op("1", "read", 0, 1, 1), op("2", "write", 0, 1, 3)])
    path.write_text(path.read_text() + "\n3\tread\t17")
    history = read_histories([path])
    assert len(history) == 2 and history.torn_lines == 1
    assert list(history.version) == [1, 3] and history.key == ["1", "2"]


def test_benchmark_command_runs_small(capsys):
    result = bench_main(20_000)
    assert result["operations"] == 20_000 and result["stale_reads"] > 0
    assert "20,000 operations" in capsys.readouterr().out


def test_profiles_owner_reads_check_writes_without_a_user(tmp_path):
    # locustfiles write profiles without a user; the owner (user id == key) reads with X-User-Id
    ops = [op("7", "write", 0, 0.1, 1), op("7", "write", 1, 1.1, 2),
           op("7", "read", 2, 2.1, 1, user="7", rid="owner"), op("7", "read", 2, 2.1, 1, user="8")]
    assert check(tmp_path, ops, domain="profiles")["findings"]["read_your_writes"]["count"] == 1
    assert check(tmp_path, ops, domain="catalog")["findings"]["read_your_writes"]["count"] == 0


def test_permission_keys_without_the_permission_name_are_flagged(tmp_path):
    ops = [op("5", "revoke", 0, 0.1, 2), op("5", "check", 3, 3.1, 1, value=1)]
    assert check(tmp_path, ops, domain="permissions")["warnings"]
    ops = [op("5:read", "revoke", 0, 0.1, 2), op("5:read", "check", 3, 3.1, 1, value=1)]
    result = check(tmp_path, ops, domain="permissions")
    assert not result["warnings"] and result["findings"]["revoked_granted"]["count"] == 1


def test_granted_after_revoke_uses_the_domains_own_revoke_bound(tmp_path):
    """One truth: the target's revoke bound (TTL + 1 s), not the strategy's staleness bound of 0."""
    ops = [op("u1:read", "grant", 0, 0.1, 1), op("u1:read", "revoke", 1.0, 1.1, 2),
           op("u1:read", "check", 3.0, 3.05, 1, value=1, rid="within"),  # 1.9 s after: within TTL + 1 = 6 s
           op("u1:read", "check", 8.0, 8.05, 1, value=1, rid="beyond")]  # 6.9 s after: a violation
    result = check(tmp_path, ops, staleness_bound_s=0.0, revoke_bound_s=6.0, domain="permissions")
    revoked = result["findings"]["revoked_granted"]
    assert revoked["bound_s"] == 6.0 and [e["request_id"] for e in revoked["examples"]] == ["beyond"]
    assert check(tmp_path, ops, staleness_bound_s=0.0, domain="permissions")["findings"]["revoked_granted"][
        "count"] == 2  # without the domain's bound, the staleness bound (0) would call both violations


def test_stale_reads_within_the_promise_are_no_anomaly(tmp_path):
    ops = [op("1", "write", 0, 0.1, 2), op("1", "read", 1.0, 1.1, 1, source="hit"),  # 0.9 s stale
           op("1", "read", 5.0, 5.1, 1, source="hit")]                                 # 4.9 s stale
    result = check(tmp_path, ops, staleness_bound_s=2.0)
    promise = result["promise"]
    assert (promise["within"], promise["beyond"], promise["held"]) == (1, 1, False)
    assert promise["text"] == "50.00% of 2 reads within the 2 s staleness promise; 1 beyond it"
    assert result["findings"]["stale_reads"]["count"] == 2 and result["anomalies"] == 1


def test_lost_writes_count_every_acknowledged_increment_lost(tmp_path):
    """A write-behind that lost its unflushed tail: the headline's lost_writes counts the increments
    (operations), not the counters (keys) nor their amounts, beside the versioned writes lost."""
    from cachestorm.reports.headline import build_headline

    ops = [op("a", "incr", 0, 0.1, rid="a1", value=2), op("a", "incr", 1, 1.1, rid="a2", value=5),
           op("a", "incr", 2, 2.1, rid="a3", value=1), op("a", "incr", 3, 3.1, rid="a4", value=4),
           op("b", "incr", 0, 0.1, rid="b1", value=3), op("b", "incr", 1, 1.1, rid="b2", value=3),
           op("1", "write", 0, 0.1, 2, rid="w1")]
    # a: 12 acknowledged, the DB holds 7 (the first two): the last 2 increments lost; b: all 6 lost
    truth = Truth(versions={"1": 1}, counters={"a": 7, "b": 0})
    findings = check(tmp_path, ops, truth)["findings"]
    lost = findings["counters"]["lost"]
    assert (lost["count"], lost["amount"], lost["increments"]) == (2, 11, 4)
    assert findings["lost_writes"]["count"] == 1
    assert build_headline({"consistency": {"findings": findings}})["lost_writes"] == 1 + 4
    # a counter short by less than its last increment still lost that increment
    findings = check(tmp_path, ops, Truth(versions={"1": 2}, counters={"a": 11, "b": 6}))["findings"]
    assert findings["counters"]["lost"]["increments"] == 1
    assert build_headline({"consistency": {"findings": findings}})["lost_writes"] == 1
