"""SLO gate: config validation, evaluation with margins, JUnit XML, Markdown."""

from xml.etree import ElementTree as ET

import pytest
from cachestorm.reports import evaluate_gate, render_gate_markdown, write_junit
from cachestorm.reports.analysis import analyze_run
from cachestorm.reports.synthetic import write_synthetic_run

from cachestorm.core.errors import CachestormError

CONFIG = """
slos:
  - name: p99 under a hot-key expiry
    metric: p99_ms_during_fault
    max: 50
  - name: DB amplification
    metric: db_amplification
    max: 5
    where: {strategy: [xfetch, read-through+lease]}
  - name: no stale reads beyond the bound
    metric: stale_reads_over_bound
    max: 0
  - name: reads consistent within 60 s
    metric: nines_within_60s
    min: 3
  - metric: lost_writes
    max: 0
    where: {experiment: redis-partition}
"""


@pytest.fixture(scope="module")
def analyses(tmp_path_factory):
    base = tmp_path_factory.mktemp("gate")
    return [analyze_run(write_synthetic_run(base / "aside")),
            analyze_run(write_synthetic_run(base / "xfetch", strategy="xfetch", fault_ms=10.0, fault_db_per_s=30.0,
                                            stale_reads=0))]


def write(tmp_path, text):
    path = tmp_path / "slos.yaml"
    path.write_text(text)
    return path


def test_gate_evaluates_each_slo_on_each_matching_run(tmp_path, analyses):
    gate = evaluate_gate(write(tmp_path, CONFIG), analyses)
    by = {(r.name, r.run): r for r in gate.results}
    slow = by[("p99 under a hot-key expiry", "profiles-cache-aside-hot-key-expiry")]
    assert not slow.passed and slow.excess == pytest.approx(50.03, abs=0.1) and "over the max 50" in slow.message
    assert by[("p99 under a hot-key expiry", "profiles-xfetch-hot-key-expiry")].passed
    amplification = [r for r in gate.results if r.metric == "db_amplification"]
    assert [r.run for r in amplification] == ["profiles-xfetch-hot-key-expiry"]  # where: strategy filter
    assert amplification[0].passed and amplification[0].excess == pytest.approx(-0.5)
    assert not by[("no stale reads beyond the bound", "profiles-cache-aside-hot-key-expiry")].passed
    assert by[("reads consistent within 60 s", "profiles-xfetch-hot-key-expiry")].passed  # "all" nines
    unmatched = by[("lost_writes", None)]  # no run matched: reported as a failure, not a silent pass
    assert not unmatched.passed and "nothing was checked" in unmatched.message
    assert not gate.passed and gate.exit_code == 1 and len(gate.failures) == 3


def test_unmeasured_metric_fails(tmp_path, analyses):
    stripped = {**analyses[1], "headline": {**analyses[1]["headline"], "lost_writes": None}}
    gate = evaluate_gate(write(tmp_path, "slos: [{metric: lost_writes, max: 0}]"), [stripped])
    assert not gate.passed and "not measured" in gate.results[0].message


def test_a_metric_of_another_domain_is_skipped_as_not_applicable(tmp_path, analyses):
    assert analyses[1]["run"]["domain"] == "profiles" and analyses[1]["headline"]["counter_lost"] is None
    gate = evaluate_gate(write(tmp_path, "slos: [{metric: counter_lost, max: 0}]"), [analyses[1]])
    [result] = gate.results
    assert gate.passed and result.skipped and result.message == "counter_lost: n/a (counters domain only)"


def test_gate_passes(tmp_path, analyses):
    gate = evaluate_gate(write(tmp_path, "slos: [{name: fast, metric: p99_ms, max: 1000}]"), analyses)
    assert gate.passed and gate.exit_code == 0 and len(gate.results) == 2


@pytest.mark.parametrize(("text", "field"), [
    ("slo: []", "field `slos`"),
    ("slos: [{metric: p99_ms}]", "slos[0]: needs `max` or `min`"),
    ("slos: [{metric: p42, max: 1}]", "slos[0].metric: 'p42' is not a known metric"),
    ("slos: [{metric: p99_ms, max: fast}]", "slos[0].max: 'fast' is not a number"),
    ("slos: [{metric: p99_ms, max: 1}, {metric: p99_ms, max: 1, where: {colour: red}}]", "slos[1].where"),
    ("slos: [{metric: p99_ms, max: 1, limit: 3}]", "unknown field(s) limit"),
    ("slos: [oops", "not valid YAML"),
])
def test_malformed_config_names_file_and_field(tmp_path, analyses, text, field):
    path = write(tmp_path, text)
    with pytest.raises(CachestormError) as error:
        evaluate_gate(path, analyses)
    assert str(path) in str(error.value) and field in str(error.value)


def test_missing_config_and_no_runs(tmp_path, analyses):
    with pytest.raises(CachestormError, match="no such gate config"):
        evaluate_gate(tmp_path / "absent.yaml", analyses)
    with pytest.raises(CachestormError, match="no runs"):
        evaluate_gate(write(tmp_path, "slos: [{metric: p99_ms, max: 1}]"), [])


def test_junit_has_one_case_per_result_with_failures(tmp_path, analyses):
    gate = evaluate_gate(write(tmp_path, CONFIG), analyses)
    root = ET.parse(write_junit(gate, tmp_path / "junit.xml")).getroot()
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == len(gate.results) and suite.get("failures") == "3" and suite.get("skipped") == "0"
    failed = [c for c in cases if c.find("failure") is not None]
    assert {c.get("classname") for c in failed} == {"profiles-cache-aside-hot-key-expiry", "no matching run"}
    assert "over the max" in failed[0].find("failure").get("message")


def test_gate_markdown(tmp_path, analyses):
    gate = evaluate_gate(write(tmp_path, CONFIG), analyses)
    text = render_gate_markdown(gate)
    assert "**failed** (3 of 8)" in text and text.count("❌") == 3 and "nothing was checked" in text


def test_where_values_are_checked_against_the_known_names_the_caller_hands_in(tmp_path, analyses):
    from cachestorm.cli.gate_cmd import known_names

    typo = write(tmp_path, "slos: [{metric: p99_ms, max: 1, where: {strategy: cache-asid}}]")
    with pytest.raises(CachestormError, match=r"slos\[0\]\.where\.strategy: 'cache-asid' names nothing known "
                                              r"\(.+\), so the SLO would check no run"):
        evaluate_gate(typo, analyses, known=known_names())
    evaluate_gate(typo, analyses)  # the reports alone know no strategies: the SLO then matches no run
    domain = write(tmp_path, "slos: [{metric: p99_ms, max: 1, where: {domain: weather}}]")
    with pytest.raises(CachestormError, match="'weather' names nothing known \\(unknown domain; choose one of "
                                              "profiles, catalog, counters, permissions\\)"):
        evaluate_gate(domain, analyses)  # domains are the core's: checked without help
