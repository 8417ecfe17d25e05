"""Experiment files: ready ones load, malformed ones give file:line field errors before anything runs."""

from __future__ import annotations

import pytest
from cachestorm.chaos.experiment import ExperimentError, load_experiment, parse_experiment, ready_experiments

from cachestorm.core.errors import CachestormError

GOOD = """\
name: mine
steady_state:
  interval: 500ms
  probes:
    - {name: p99, metric: p99_ms, max: 250, window: 3s}
method:
  - fault: redis-latency
    at: 2m
    for: 30s
    settings: {latency_ms: 50}
  - {fault: hot-key-expiry, at: 10}
deviation: abort
"""


def test_every_ready_experiment_loads_and_hot_key_expiry_is_the_foundation():
    names = ready_experiments()
    for expected in ("hot-key-expiry", "synchronized-expiry", "redis-partition", "failed-cache-writes",
                     "db-slowdown-with-retries", "write-behind-crashing-flusher", "invalidation-lost"):
        assert expected in names
    for name in names:
        assert load_experiment(name).method
    hot = load_experiment("hot-key-expiry")
    assert [(s.fault, s.at_s, s.for_s, s.settings) for s in hot.method] == [
        ("hot-key-expiry-repeated", 10.0, 6.0, {"count": 10, "every_ms": 1500})]


def test_a_good_file_parses_durations_and_sorts_the_timeline(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(GOOD)
    exp = load_experiment(str(path))
    assert exp.deviation == "abort" and exp.interval_s == 0.5
    assert [(s.fault, s.at_s, s.for_s) for s in exp.method] == [("hot-key-expiry", 10.0, None),
                                                                ("redis-latency", 120.0, 30.0)]
    assert exp.probes[0].window_s == 3.0 and exp.probes[0].verdict(300) == "deviated"
    assert exp.duration_s() == 150.0


@pytest.mark.parametrize("text, expected", [
    (GOOD.replace("latency_ms: 50", "latency_ms: fast"), "x.yaml:10: method.0.settings.latency_ms: "),
    (GOOD.replace("latency_ms: 50", "latencyms: 50"), "x.yaml:10: method.0.settings.latencyms: unknown setting"),
    (GOOD.replace("for: 30s", "for: soon"), "x.yaml:9: method.0.for: 'soon' is not a duration"),
    (GOOD.replace("fault: redis-latency", "fault: redis-latencyy"), "x.yaml:7: method.0.fault: unknown fault"),
    (GOOD.replace("metric: p99_ms", "metric: p42"), "x.yaml:5: steady_state.probes.0.metric: must be one of"),
    (GOOD.replace("deviation: abort", "deviation: panic"), "x.yaml:12: deviation: must be one of"),
    (GOOD.replace("  - {fault: hot-key-expiry, at: 10}", "  - {fault: hot-key-expiry}"),
     "x.yaml:11: method.1: required: at"),
    (GOOD.replace("interval: 500ms", "interval: [1]"), "x.yaml:3: steady_state.interval:"),
    ("name: x\nmethod: [\n", "x.yaml:3: not valid YAML"),
    # issue 21: accepted silently, or refused only once the stack and targets had started
    (GOOD.replace("max: 250, window: 3s", "min: 300, max: 250, window: 3s"),
     "x.yaml:5: steady_state.probes.0.min: min 300 is above max 250"),
    (GOOD.replace("window: 3s", "window: 0s"), "x.yaml:5: steady_state.probes.0.window: must be more than 0"),
    (GOOD.replace("max: 250", "max: .nan"), "x.yaml:5: steady_state.probes.0.max: must be a finite number"),
    (GOOD.replace("max: 250", "max: .inf"), "x.yaml:5: steady_state.probes.0.max: must be a finite number"),
    (GOOD.replace("  interval: 500ms\n", "  interval: 500ms\n  interval: 2s\n"),
     "x.yaml:4: not valid YAML: duplicate key 'interval' at line 4 (first at line 3)"),
    (GOOD.replace("    for: 30s\n", "    for: 30s\n    for: 5s\n"), "x.yaml:10: not valid YAML: duplicate key 'for'"),
    (GOOD.replace("{fault: hot-key-expiry, at: 10}", "{fault: hot-key-expiry, at: 10, for: 5s}"),
     "x.yaml:11: method.1.for: hot-key-expiry is one-shot"),
    (GOOD.replace("for: 30s", "for: 0s"), "x.yaml:9: method.0.for: must be more than 0"),
    (GOOD.replace("latency_ms: 50", "latency_ms: -5"), "x.yaml:10: method.0.settings.latency_ms: "
                                                       "setting 'latency_ms' of fault 'redis-latency': latency_ms must not be negative"),
    (GOOD.replace("latency_ms: 50", "latency_ms: 1e400"), "method.0.settings.latency_ms: "),
    (GOOD.replace("latency_ms: 50", "latency_ms: .inf"), "method.0.settings.latency_ms: "
                                                         "setting 'latency_ms' of fault 'redis-latency': expected a finite number"),
])
def test_malformed_files_name_file_line_and_field(text, expected):
    with pytest.raises(ExperimentError) as caught:
        parse_experiment(text, "x.yaml")
    assert expected in str(caught.value), str(caught.value)


def test_every_problem_is_listed_at_once():
    text = GOOD.replace("metric: p99_ms", "metric: nope").replace("deviation: abort", "deviation: x")
    message = str(pytest.raises(ExperimentError, parse_experiment, text, "x.yaml").value)
    assert message.startswith("2 problem(s):") and ":5:" in message and ":12:" in message


def test_unknown_name_lists_the_ready_ones(tmp_path):
    with pytest.raises(CachestormError, match="ready experiments: .*hot-key-expiry"):
        load_experiment("no-such-experiment")
    with pytest.raises(CachestormError, match="does not exist"):
        load_experiment(str(tmp_path / "missing.yaml"))


def test_one_shot_faults_end_the_timeline_at_their_start():
    from cachestorm.chaos.experiment import Experiment

    assert Experiment.single("hot-key-expiry", {}, 30.0).duration_s() == 0.0
    assert Experiment.single("redis-latency", {}, 30.0).duration_s() == 30.0


def test_a_one_fault_timeline_refuses_a_window_of_nothing_or_forever():
    from cachestorm.chaos.experiment import Experiment

    for window in (0.0, 1e30):
        with pytest.raises(CachestormError, match="--for must be more than 0s and at most 24h"):
            Experiment.single("redis-latency", {}, window)
    with pytest.raises(CachestormError, match="latency_ms.*finite"):
        Experiment.single("redis-latency", {"latency_ms": "1e400"}, 30.0)  # was OverflowError
    with pytest.raises(CachestormError, match="at most 24h"):
        load_experiment("hot-key-expiry").shifted(1e12)


def test_an_experiment_path_the_file_system_cannot_take_is_one_line(tmp_path):
    with pytest.raises(ExperimentError, match="cannot use it"):
        load_experiment("x" * 300 + ".yaml")  # was OSError: File name too long
    with pytest.raises(ExperimentError, match="is a folder"):
        load_experiment(str(tmp_path))
