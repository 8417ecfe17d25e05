"""Numbers you can trust (issue 15), on real run folders: real stack, real targets, real Locust.

One short run per shape, shared by the module: a warm profiles run with a hot-key expiry (its steady
DB read load is 0, which made amplification None before), a shorter one without a fault (compare
across run sizes), and a permissions run (the revoke bound). Plus the typed-flags mechanism of every
command, at the seam where the CLI hands its settings over.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from cachestorm.reports import analyze_run, compare_runs, evaluate_gate
from cachestorm.reports.dbload import STEADY_FLOOR_PER_S
from cachestorm.reports.headline import CATALOG, display, shown_metrics
from cachestorm.reports.render import render_run
from typer.testing import CliRunner

CLI = [sys.executable, "-m", "cachestorm"]
REPO = Path(__file__).resolve().parent.parent
SMALL = ["--users", "10", "--spawn-rate", "10", "--keys", "200", "--rows", "300", "--recompute", "20ms"]


def _run(tmp: Path, env: dict, *args: str) -> Path:
    out = tmp / "runs"
    before = set(out.iterdir()) if out.exists() else set()
    result = subprocess.run(CLI + ["run", *args, *SMALL, "--out", str(out)], cwd=tmp, env=env,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    [run_dir] = set(out.iterdir()) - before
    return run_dir


@pytest.fixture(scope="module")
def env() -> dict:
    import os

    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, env) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("numbers")
    return {
        # --duration typed: the experiment's `run: {duration: 30s}` must not override it
        # the fault 8 s after the load step starts: Locust takes 6-9 s to boot on a busy machine,
        # and the steady phase before the fault needs traffic; its hot keys expire until 14 s, 4 s to settle.
        # Not longer: the DB ground truth's slack (20 transactions) is met by ~1 unexplained extra
        # PostgreSQL transaction per second in runs over ~20 s
        # --missing-share typed too: with the experiment's 1 h TTL, a warm steady phase has no DB reads
        "expiry": _run(tmp, env, "--strategy", "cache-aside+coalescing", "--duration", "18s",
                       "--missing-share", "0", "-e", "hot-key-expiry", "--experiment-at", "8s", "--label", "expiry"),
        # a smaller run than the expiry's (the experiment's rate: 100/s) to compare across run sizes
        "short": _run(tmp, env, "--strategy", "cache-aside+coalescing", "--duration", "4s", "--rate", "50",
                      "--label", "short"),
        "permissions": _run(tmp, env, "--domain", "permissions", "--duration", "4s", "--label", "permissions"),
    }


@pytest.fixture(scope="module")
def expiry(runs) -> dict:
    return json.loads((runs["expiry"] / "report.json").read_text())


# ---------------------------------------------------------------- 1. typed flags win

@pytest.mark.slow
def test_typed_duration_beats_the_experiments_run_section(runs):
    meta = json.loads((runs["expiry"] / "run.json").read_text())
    assert meta["settings"]["duration_s"] == 18.0 and "duration_s" in meta["settings"]["explicit"]
    assert "duration_s" not in meta["recommended_settings_applied"]
    load = next(json.loads(line) for line in (runs["expiry"] / "journal.jsonl").read_text().splitlines()
                if json.loads(line)["kind"] == "load")
    assert load["t_end"] - load["t_start"] < 29  # not the experiment's 30 s (+ Locust's boot and stop)


def _capture(monkeypatch, module: str, attribute: str, result=None) -> list:
    seen = []

    def fake(*args, **kwargs):
        seen.append(args[0])
        if result is None:
            raise SystemExit(0)
        return result

    monkeypatch.setattr(f"{module}.{attribute}", fake)
    return seen


@pytest.mark.parametrize(("argv", "module", "attribute"), [
    (["run", "-d", "20s", "--retry", "backoff:3", "-s", "read-through", "--domain", "profiles",
      "-e", "db-slowdown-with-retries"], "cachestorm.cli.run_cmd", "run_once"),
    (["matrix", "--strategies", "cache-aside", "--duration", "20s", "--domain", "profiles"],
     "cachestorm.cli.matrix_cmd", "run_matrix"),
    (["capacity", "-s", "cache-aside", "--domain", "profiles", "--write-ratio", "0.1"],
     "cachestorm.cli.capacity_cmd", "run_capacity"),
    (["demo", "--duration", "20s"], "cachestorm.cli.demo_cmd", "run_matrix"),
], ids=["run", "matrix", "capacity", "demo"])
def test_every_command_marks_what_the_user_typed(monkeypatch, argv, module, attribute):
    from cachestorm.cli.main import build_app
    from cachestorm.conductor import apply_recommendations, resolve_experiment

    seen = _capture(monkeypatch, module, attribute)
    CliRunner().invoke(build_app(), argv)
    [settings] = seen
    typed = {"run": {"duration_s", "retry", "strategy", "domain", "experiment"},
             "matrix": {"duration_s", "domain"}, "capacity": {"domain", "write_ratio"},
             "demo": {"duration_s"}}[argv[0]]  # the rest of the demo comes from hot-key-expiry's run:
    assert typed <= settings.explicit
    assert not {"users", "rate"} & settings.explicit  # defaults are not typed
    if argv[0] == "run":  # the experiment's naive:3 for 60 s fills nothing the user typed
        applied = apply_recommendations(settings, resolve_experiment("db-slowdown-with-retries"))
        assert applied == {} and (settings.retry, settings.duration_s) == ("backoff:3", 20.0)
        assert settings.strategy == "read-through"


def test_a_new_flag_inherits_the_mechanism_by_its_name():
    """A flag named like its RunSettings field (optionally + _s/_ms) needs no registration."""
    from cachestorm.cli.options import typed_settings

    seen = {}
    app = typer.Typer()

    @app.command()
    def command(ctx: typer.Context, pool_timeout: str = typer.Option("1s"), recompute: str = typer.Option("50ms"),
                seed: int = typer.Option(42)) -> None:
        seen["typed"] = typed_settings(ctx)

    CliRunner().invoke(app, ["--pool-timeout", "2s", "--seed", "7"])
    assert seen["typed"] == {"pool_timeout_s", "seed"}


# ---------------------------------------------------------------- 2. amplification in a warm run

@pytest.mark.slow
def test_amplification_is_measured_in_a_warm_run(expiry):
    db = expiry["db"]
    assert db["steady_queries_per_s"] < STEADY_FLOOR_PER_S  # warm: peak ÷ steady would divide by zero
    assert db["amplification"] == pytest.approx(db["peak_queries_per_s"] / STEADY_FLOOR_PER_S)
    assert expiry["headline"]["db_amplification"] > 1 and expiry["headline"]["db_peak_queries_per_s"] > 0


@pytest.mark.slow
def test_no_none_in_reports_and_other_domains_rows_left_out(runs, expiry):
    names = shown_metrics(expiry)
    assert "db_amplification" in names and "db_peak_queries_per_s" in names
    assert not {"counter_lost", "counter_duplicated", "revoked_granted"} & set(names)
    assert expiry["headline_notes"]["not_applicable"]["counter_lost"] == {"why": "counters domain only",
                                                                          "shown": False}
    assert all(display(expiry, n) not in (None, "None") for n in names)
    summary = (runs["expiry"] / "summary.md").read_text()
    html = (runs["expiry"] / "report.html").read_text()
    for text in (summary, html):
        assert "None" not in text and "counters with lost increments" not in text
    short = json.loads((runs["short"] / "report.json").read_text())
    assert display(short, "db_amplification") == "n/a (no fault in this run)"
    from cachestorm.summary import headline  # what `cachestorm run` prints at the end

    printed = headline(runs["expiry"])
    assert None not in printed.values() and "counter_lost" not in printed
    assert printed["db_amplification"].endswith(" x")


# ---------------------------------------------------------------- 3. the shipped gate on a healthy run

@pytest.mark.slow
def test_the_shipped_gate_measures_everything_it_asks_for(runs):
    gate = evaluate_gate(REPO / "examples" / "gate.yaml", [runs["expiry"]])
    assert not [r for r in gate.results if "not measured" in r.message], gate.to_dict()


# ---------------------------------------------------------------- 4. worst second in the fault

@pytest.mark.slow
def test_worst_second_of_the_fault_is_not_diluted(expiry):
    latency = expiry["latency"]
    worst = latency["during_fault_worst_second"]
    [during] = [p for p in expiry["phases"] if p["kind"] == "during"]
    # seconds are recorder intervals [t, t+1) labelled floor(t); one counts as "during" if it ends inside
    assert during["t_start"] - 2 < worst["t"] < during["t_end"]
    assert worst["p99_ms"] >= latency["during_fault"]["p99_ms"] * 0.999
    assert expiry["headline"]["p99_ms_fault_worst_second"] == worst["p99_ms"]
    assert not CATALOG["p99_ms_during_fault"].judged and CATALOG["p99_ms_fault_worst_second"].judged
    # a second is drawn at its centre, so the spike is not drawn before the fault's band
    from cachestorm.reports.html import load_start, run_charts

    [latency_chart] = [c for c in run_charts(expiry) if c.chart_id == "latency"]
    p99_line = next(line for line in latency_chart.lines if line.name == "p99")
    # (in seconds since load start, as every chart of the page)
    assert p99_line.points[0][0] == pytest.approx(latency["series"][0]["t"] + 0.5 - load_start(expiry))


# ---------------------------------------------------------------- 5. recovery per signal

@pytest.mark.slow
def test_recovery_says_which_signal_recovered_last(expiry):
    [fault] = expiry["db"]["faults"]
    assert set(fault["recovery_by_signal"]) == {"p99_ms", "errors_per_s", "db_queries_per_s", "clients"}
    assert fault["recovery_s"] is not None and fault["recovery_s"] < 5  # a clean coalescing run settles fast
    assert fault["recovered_last"] in fault["recovery_by_signal"]
    assert fault["recovery_s"] == max(fault["recovery_by_signal"].values())


# ---------------------------------------------------------------- 6. rates, not counts

@pytest.mark.slow
def test_compare_judges_rates_and_shows_counts(runs):
    short, long = analyze_run(runs["short"]), analyze_run(runs["expiry"])
    comparison = compare_runs(short, long)
    rows = {row["metric"]: row for row in comparison["metrics"]}
    assert long["headline"]["requests"] > short["headline"]["requests"] * 1.3  # really of different sizes
    for count in ("stale_reads", "requests", "errors"):
        if count in rows:
            assert not rows[count]["regression"] and not rows[count]["improvement"]
    per_1k = rows["stale_reads_per_1k"]
    assert per_1k["judged"] and per_1k["baseline"] == pytest.approx(
        short["headline"]["stale_reads"] * 1000 / short["consistency"]["findings"]["stale_reads"]["reads"])


# ---------------------------------------------------------------- 7. one truth per promise

@pytest.mark.slow
def test_permissions_revoke_bound_is_the_targets_own(runs):
    truth = json.loads((runs["permissions"] / "truth.json").read_text())
    report = json.loads((runs["permissions"] / "report.json").read_text())
    ttl = 5.0  # the permissions domain's default TTL
    assert truth["declared_revoke_bound_s"] == ttl + 1
    assert report["consistency"]["findings"]["revoked_granted"]["bound_s"] == ttl + 1
    headline = report["headline"]
    assert headline["target_permission_violations"] is not None and headline["lease_refused"] is not None
    from html import escape

    assert escape("granted after revoke (targets' own count)") in (runs["permissions"] / "report.html").read_text()


# ---------------------------------------------------------------- 8. lead with the promise

@pytest.mark.slow
def test_the_report_leads_with_the_promise(runs, expiry):
    promise = expiry["consistency"]["promise"]
    assert promise["held"] and promise["beyond"] == expiry["headline"]["stale_reads_over_bound"] == 0
    assert promise["text"].endswith("within the 3600 s staleness promise; 0 beyond it")  # the experiment's TTL
    assert expiry["headline"]["anomalies"] == 0  # stale reads within the bound are no anomaly
    assert expiry["headline"]["stale_reads"] > 0  # ... though there were some
    objects = {"db_ground_truth", "baseline", "recovery", "verdict"}  # the objects beside the flat figures
    assert all(isinstance(v, int | float) or v is None for k, v in expiry["headline"].items() if k not in objects)
    assert all(isinstance(expiry["headline"][k], dict) for k in objects)
    summary = (runs["expiry"] / "summary.md").read_text()
    assert expiry["headline"]["verdict"]["text"] in summary.splitlines()[2]  # the verdict first
    assert f"{promise['text']}  " in summary.splitlines()  # then the promise, not bold: it held


# ---------------------------------------------------------------- 9. ground truth disagreements

@pytest.mark.slow
def test_disagreeing_db_counts_are_reported(runs, expiry, tmp_path):
    assert expiry["db"]["ground_truth"]["agree"], expiry["db"]["ground_truth"]
    assert not expiry["headline_notes"]["disagreements"]
    # the same real run with targets that over-report their DB queries threefold
    doctored = tmp_path / "doctored"
    shutil.copytree(runs["expiry"], doctored)
    lines = []
    for line in (doctored / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        for name in list(record.get("metrics") or {}):
            if name.startswith("cachestorm_db_queries_total"):
                record["metrics"][name] *= 3
        lines.append(json.dumps(record))
    (doctored / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    render_run(doctored)
    report = json.loads((doctored / "report.json").read_text())
    assert not report["db"]["ground_truth"]["agree"]
    assert report["headline"]["db_ground_truth"] == {
        "source": "pg_stat_statements", "pg_count": expiry["db"]["ground_truth"]["pg_count"],
        "targets_count": 3 * expiry["db"]["ground_truth"]["target_queries"], "agrees": False}
    assert "the DB figures shown are PostgreSQL's" in (doctored / "summary.md").read_text()
    # ... and the headline's DB figures are PostgreSQL's own, not the targets' threefold ones
    assert report["db"]["source"] == "pg_reads"
    assert report["headline"]["db_loads_per_expiry"] == pytest.approx(expiry["headline"]["db_loads_per_expiry"],
                                                                      rel=0.05, abs=0.1)
    assert report["headline"]["db_peak_queries_per_s"] == pytest.approx(
        max(p["per_s"] for p in expiry["db"]["series"]["pg_reads"]
            if report["faults"][0]["t_start"] - 0.5 <= p["t"] < report["phases"][-1]["t_start"] - 0.5), abs=0.01)


# ---------------------------------------------------------------- 10. one recovery, shown alike everywhere

@pytest.mark.slow
def test_every_place_shows_the_one_recovery(runs, expiry, tmp_path):
    """CLI summary, report.html and summary.md (faults tables and headline rows), report.json's
    headline and incident section, the comparison and the gate: one value, one wording."""
    from cachestorm.reports.headline import recovery_text

    from cachestorm.summary import headline as cli_headline

    recovery = expiry["db"]["recovery"]
    assert recovery == expiry["db"]["faults"][-1]["recovery"] and recovery["recovered"] is not None
    headline = expiry["headline"]
    assert headline["recovery"] == {k: recovery[k] for k in ("recovered", "time_s", "within_s", "last_signal")}
    assert headline["recovered_on_its_own"] == recovery["recovered"]
    assert headline["time_to_recover_s"] == headline["recovery_s"] == recovery["time_s"]
    meta = expiry["incident"]["metastability"]
    assert (meta["recovered_on_its_own"], meta["recovery_s"]) == (recovery["recovered"], recovery["time_s"])
    text = recovery_text(recovery)
    printed = cli_headline(runs["expiry"])
    assert printed["recovered_on_its_own"] == recovery_text(recovery, "recovered_on_its_own")
    for name in ("time_to_recover_s", "recovery_s"):
        assert printed.get(name, text) == text  # shown as the same words (left out when there is no time)
    html = (runs["expiry"] / "report.html").read_text()
    summary = (runs["expiry"] / "summary.md").read_text()
    from html import escape

    assert f"<td>{escape(text)}</td>" in html and f"| {text} |" in summary
    comparison = compare_runs(expiry, expiry)
    rows = {row["metric"]: row for row in comparison["metrics"]}
    assert rows["recovered_on_its_own"]["candidate"] == recovery["recovered"]
    if recovery["time_s"] is not None:
        assert rows["time_to_recover_s"]["candidate"] == rows["recovery_s"]["candidate"] == recovery["time_s"]
    config = tmp_path / "gate.yaml"
    config.write_text("slos:\n  - {metric: recovered_on_its_own, min: 1}\n  - {metric: time_to_recover_s, max: 60}\n"
                      "  - {metric: recovery_s, max: 60}\n")
    gate = {r.metric: r for r in evaluate_gate(config, [expiry]).results}
    assert gate["recovered_on_its_own"].value == recovery["recovered"]
    assert gate["time_to_recover_s"].value == gate["recovery_s"].value == recovery["time_s"]
