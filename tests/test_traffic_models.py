"""Traffic models (pure, fast): each key model against its exact distribution, mixes, presets,
shapes, retries, arrivals, recording and merge; bad input gives a CachestormError naming the option."""

from __future__ import annotations

import json
import math
from argparse import Namespace
from collections import Counter

import pytest
from cachestorm.traffic.models import keys as km
from cachestorm.traffic.models.arrivals import Gaps
from cachestorm.traffic.models.ops import domain_mix, mix
from cachestorm.traffic.models.presets import PRESETS, get_preset
from cachestorm.traffic.models.retry import Backoff, Budget, Naive, build_retry
from cachestorm.traffic.models.shapes import build_shape
from cachestorm.traffic.models.sizes import META_ETC_SCALE, META_ETC_SHAPE, build_value_size, meta_etc
from cachestorm.traffic.recording import (
    HistorySampler,
    HistoryWriter,
    LatencyRecorder,
    merge_run,
    new_histogram,
    read_history,
)
from cachestorm.traffic.settings import ARGUMENTS, build_settings, option_name

from cachestorm.core.errors import CachestormError

SAMPLES = 200_000


def chi_square_ok(model, keys_range, samples=SAMPLES) -> tuple[float, float]:
    """Chi-square of ``samples`` draws against model.pmf, tail bins merged to expected >= 20.

    Returns (statistic, critical value at p = 0.001, Wilson-Hilferty). A fixed seed makes it deterministic.
    """
    counts = Counter(model() for _ in range(samples))
    assert set(counts) <= set(keys_range), "drew an id outside the model's range"
    statistic, bins, observed, expected = 0.0, 0, 0, 0.0
    for key in keys_range:
        observed += counts.get(key, 0)
        expected += model.pmf(key) * samples
        if expected >= 20:
            statistic += (observed - expected) ** 2 / expected
            bins += 1
            observed, expected = 0, 0.0
    if expected > 0:
        statistic += (observed - expected) ** 2 / expected
        bins += 1
    df = bins - 1
    z = 3.09  # p = 0.001
    critical = df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3
    return statistic, critical


@pytest.mark.parametrize("alpha", [0.5, 0.99, 1.21, 2.5])
def test_zipf_is_exact_bounded_zipf(alpha):
    model = km.zipf(1000, alpha, seed=7)
    norm = math.fsum(r ** -alpha for r in range(1, 1001))
    for rank in (1, 2, 3, 10, 500, 1000):  # pmf is exactly r^-a / H(N, a)
        assert model.pmf(rank) == pytest.approx(rank ** -alpha / norm, rel=1e-9)
    assert math.fsum(model.pmf(r) for r in range(1, 1001)) == pytest.approx(1.0, abs=1e-12)
    statistic, critical = chi_square_ok(model, range(1, 1001))
    assert statistic < critical, (statistic, critical)
    # top ranks: max abs error of frequencies below 4 standard errors
    model = km.zipf(1000, alpha, seed=8)
    counts = Counter(model() for _ in range(SAMPLES))
    for rank in range(1, 11):
        p = model.pmf(rank)
        assert abs(counts[rank] / SAMPLES - p) < 4 * math.sqrt(p * (1 - p) / SAMPLES)


def test_zipf_single_key_and_seed_replay():
    assert {km.zipf(1, 1.0, seed=1)() for _ in range(100)} == {1}
    a, b = km.zipf(5000, 1.1, seed=42), km.zipf(5000, 1.1, seed=42)
    assert [a() for _ in range(1000)] == [b() for _ in range(1000)]


def test_uniform_hotspot_latest_match_their_distributions():
    for model in (km.uniform(500, seed=1), km.hotspot(500, 0.2, 0.8, seed=2)):
        statistic, critical = chi_square_ok(model, range(1, 501))
        assert statistic < critical, (type(model).__name__, statistic, critical)
    hot = km.hotspot(1000, 0.2, 0.8, seed=3)
    share = sum(1 for _ in range(50_000) if hot() <= 200) / 50_000
    assert share == pytest.approx(0.8, abs=0.01)
    latest = km.latest(500, 0.99, seed=4)
    written = [latest.next_write_key() for _ in range(137)]
    assert written[:3] == [1, 2, 3] and latest.latest == 137
    assert latest.pmf(137) == pytest.approx(km.zipf(500, 0.99).pmf(1))  # the latest write is the hottest
    statistic, critical = chi_square_ok(latest, range(1, 501))
    assert statistic < critical


def test_celebrity_and_missing_keys_on_top_of_a_model():
    model = km.with_missing(km.celebrity(km.zipf(1000, 1.21, seed=5), 0.3, seed=6), 0.1, seed=9)
    assert model.pmf(1) == pytest.approx(0.9 * (0.3 + 0.7 * km.zipf(1000, 1.21).pmf(1)))
    assert model.pmf(1500) == pytest.approx(0.1 / 1000)
    statistic, critical = chi_square_ok(model, range(1, 2001))
    assert statistic < critical
    missing = sum(1 for _ in range(20_000) if model() > 1000) / 20_000
    assert missing == pytest.approx(0.1, abs=0.01)


@pytest.mark.parametrize("bad, message", [
    (lambda: km.zipf(100, 0), "--alpha"),
    (lambda: km.zipf(100, -1.5), "--alpha"),
    (lambda: km.zipf(0, 1.0), "--keys"),
    (lambda: km.uniform(0), "--keys"),
    (lambda: km.build_key_model("pareto", 10), "--key-model"),
    (lambda: km.celebrity(km.uniform(10), 1.5), "--celebrity-share"),
    (lambda: get_preset("ycsb-z"), "--preset"),
    (lambda: build_shape("zigzag"), "--shape"),
    (lambda: build_shape("step", "steps=0,hold=5"), "step"),
    (lambda: build_shape("step", "steps=three"), "--shape-args"),
    (lambda: build_retry("naive:0"), "--retry"),
    (lambda: build_retry("sometimes"), "--retry"),
    (lambda: Gaps("constant")(0), "--rate"),
    (lambda: Gaps("poisson")(-3), "--rate"),
    (lambda: Gaps("uniform"), "--arrivals"),
    (lambda: build_value_size("huge"), "--value-size"),
    (lambda: domain_mix("counters", 0.1, 0.1), "--delete-ratio"),
])
def test_bad_input_names_the_parameter(bad, message):
    with pytest.raises(CachestormError) as info:
        bad()
    assert message in str(info.value) and "\n" not in str(info.value)


def test_malformed_shape_files(tmp_path):
    good = tmp_path / "stages.json"
    good.write_text(json.dumps({"stages": [{"duration": 5, "level": 0.5}, {"duration": 5, "level": 1}]}))
    shape = build_shape(str(good))
    assert (shape.level(0), shape.level(6), shape.level(10)) == (0.5, 1.0, None)
    for name, text in (("a.json", "{not json"), ("b.json", '{"stages": []}'), ("c.yaml", "stages: [{duration: -1, level: 1}]"),
                       ("d.json", '{"steps": 3}')):
        (tmp_path / name).write_text(text)
        with pytest.raises(CachestormError, match="--shape file .* is malformed"):
            build_shape(str(tmp_path / name))
    with pytest.raises(CachestormError, match="does not exist"):
        build_shape(str(tmp_path / "missing.yaml"))


def test_shapes_levels():
    step = build_shape("step", "steps=4,hold=10")
    assert [step.level(t) for t in (0, 9.9, 10, 25, 39, 40)] == [0.25, 0.25, 0.5, 0.75, 1.0, None]
    ramp = build_shape("ramp", "start=0,end=1,duration=10")
    assert ramp.level(5) == pytest.approx(0.5) and ramp.level(10) is None
    spike = build_shape("spike", "base=0.1,peak=1,at=5,length=2,duration=10")
    assert [spike.level(t) for t in (4, 5, 6.9, 7, 10)] == [0.1, 1, 1, 0.1, None]
    diurnal = build_shape("diurnal", "low=0.2,high=1,period=20")
    assert diurnal.level(0) == pytest.approx(0.2) and diurnal.level(10) == pytest.approx(1.0)
    assert build_shape("").level(1e6) == 1.0


def test_mixes_and_presets():
    m = mix(seed=1, read=0.9, write=0.1)
    drawn = Counter(m() for _ in range(50_000))
    assert drawn["write"] / 50_000 == pytest.approx(0.1, abs=0.005)
    assert domain_mix("counters").probabilities == {"read": 0.5, "write": 0.5}
    assert get_preset("twitter-median").alpha == 1.21
    etc = get_preset("meta-etc")
    assert etc.mix["read"] / etc.mix["write"] == pytest.approx(30)
    # meta-etc alpha: the least popular half of 100k keys gets about 1% of requests
    z = km.zipf(100_000, etc.alpha)
    assert 1 - z.cdf[49_999] == pytest.approx(0.01, abs=0.002)
    for name in PRESETS:  # every preset builds for every domain
        for domain in ("profiles", "catalog", "counters", "permissions"):
            build_settings(namespace(preset=name, keys=2000), domain)


def test_meta_etc_value_sizes():
    sizes = meta_etc(seed=3)
    drawn = sorted(sizes() for _ in range(50_000))
    median = META_ETC_SCALE / META_ETC_SHAPE * (2 ** META_ETC_SHAPE - 1)
    assert drawn[len(drawn) // 2] == pytest.approx(median, rel=0.05)
    assert build_value_size("fixed:230")() == 230 and build_value_size("64")() == 64


def test_retry_policies():
    assert [Naive(2).delay(a, True) for a in (1, 2, 3)] == [0.0, 0.0, None]
    assert Naive(2).delay(1, False) is None  # 4xx is an answer: never retried
    backoff = Backoff(4, base=0.1, cap=0.3, seed=1)
    for attempt, ceiling in ((1, 0.1), (2, 0.2), (3, 0.3), (4, 0.3)):
        assert 0 <= backoff.delay(attempt, True) <= ceiling
    assert backoff.delay(5, True) is None
    budget = Budget(0.1, max_retries=3, cap=2)
    assert budget.delay(1, True) is not None and budget.delay(1, True) is not None
    assert budget.delay(1, True) is None and budget.refused == 1  # bucket empty
    for _ in range(10):
        budget.on_request()  # 10 requests x 0.1 = one more retry
    assert budget.delay(1, True) is not None and budget.delay(1, True) is None


def test_poisson_arrivals_have_the_rate():
    gaps = Gaps("poisson", seed=5)
    mean = sum(gaps(200.0) for _ in range(20_000)) / 20_000
    assert mean == pytest.approx(1 / 200, rel=0.03)
    assert Gaps("constant")(250.0) == 0.004


def namespace(**overrides) -> Namespace:
    values = {option_name(flag): default for flag, _, default, _ in ARGUMENTS}
    values.update(overrides)
    return Namespace(**values)


def test_settings_precedence_and_errors():
    settings = build_settings(namespace(preset="ycsb-d", alpha=1.5), "profiles")
    assert settings.description["key_model"] == "latest" and settings.description["alpha"] == 1.5
    settings = build_settings(namespace(preset="meta-etc", write_ratio=0.5), "catalog")
    assert settings.mix.probabilities == {"read": 0.5, "write": 0.5}
    for bad, flag in ((dict(rate=-1.0), "--rate"), (dict(history_sample=2.0), "--history-sample"),
                      (dict(think_time="3,1"), "--think-time"), (dict(arrivals="bursty"), "--arrivals"),
                      (dict(max_inflight=0), "--max-inflight"), (dict(keys=0), "--keys"), (dict(alpha=0.0), "--alpha")):
        with pytest.raises(CachestormError, match=flag):
            build_settings(namespace(**bad), "profiles")
    # workers get different but reproducible streams
    a = build_settings(namespace(seed=3), "profiles", salt=0).key_model
    b = build_settings(namespace(seed=3), "profiles", salt=1).key_model
    c = build_settings(namespace(seed=3), "profiles", salt=1).key_model
    first_b = [b() for _ in range(50)]
    assert [a() for _ in range(50)] != first_b and [c() for _ in range(50)] == first_b


def test_history_writer_and_sampler(tmp_path):
    sampler = HistorySampler(hot_keys=10, fraction=0.05)
    assert all(sampler(k) for k in range(1, 11))
    share = sum(sampler(k) for k in range(11, 100_011)) / 100_000
    assert share == pytest.approx(0.05, abs=0.005)
    writer = HistoryWriter(tmp_path, "w0-1")
    writer.record(3, "write", 10, 20, 1.5, 200, 4, "", "", "w0-1-1", "", 1)
    writer.record(3, "read", 30, 40, 1.6, 503, "", "", "", "w0-1-2", "", 2)
    writer.close()
    rows = read_history(tmp_path / "histories" / "w0-1.tsv")
    assert rows[0]["version"] == "4" and rows[1]["attempt"] == "2" and rows[1]["status"] == "503"


def test_merge_run_is_lossless(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"started_at": 1000.0}))
    expected = new_histogram()
    total_requests = 0
    for worker, values in (("w0-1", [100, 200, 300, 5_000_000]), ("w1-2", [150, 250, 60_000_000])):
        recorder = LatencyRecorder(tmp_path, worker, 1000.0)
        for i, v in enumerate(values):
            recorder.record("read", v, now_wall=1001.2 + i * 0.5)  # spans seconds 1001..1002
            recorder.count("requests", 1, now_wall=1001.2 + i * 0.5)
            expected.record_value(v)
            total_requests += 1
        recorder.close()
    result = merge_run(tmp_path)
    assert result["workers"] == 2 and result["counts"]["requests"] == total_requests
    assert result["kinds"]["all"]["count"] == expected.get_total_count()
    assert result["kinds"]["all"]["max_us"] == expected.get_max_value()
    assert result["kinds"]["read"]["p99_us"] == expected.get_value_at_percentile(99)
    lines = [json.loads(x) for x in (tmp_path / "latency" / "merged.jsonl").read_text().splitlines()]
    assert {line["t"] for line in lines} == {1.0, 2.0}
    assert all(line["worker"] == "merged" and line["interval_s"] == 1.0 for line in lines)
    assert merge_run(tmp_path) == result  # idempotent
