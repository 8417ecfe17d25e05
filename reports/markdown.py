"""Markdown summaries that fit a GitHub job summary or a PR comment."""

from __future__ import annotations

from cachestorm.reports.compare import compare_runs, metric_names, winners
from cachestorm.reports.headline import display, lead, metric_info, recovery_text, shown_metrics
from cachestorm.reports.html import fmt

from cachestorm.core.runfiles import incomplete

_RUN_METRICS = ("requests", "p99_ms", "p99_ms_before_fault", "p99_ms_during_fault", "p99_ms_fault_worst_second",
                "p999_ms_fault_worst_second", "error_rate", "db_amplification", "db_peak_queries_per_s",
                "db_loads_per_expiry", "recovery_s", "hit_ratio", "reads_within_bound",
                "stale_reads_over_bound_per_1k", "stale_reads_per_1k", "stale_reads", "max_staleness_s",
                "ryw_violations_per_1k", "lost_writes", "counter_lost", "counter_duplicated", "revoked_granted",
                "target_permission_violations")


def promise_held(analysis: dict) -> bool:
    return bool(((analysis.get("consistency") or {}).get("promise") or {}).get("held"))


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_run_markdown(analysis: dict, gate=None, capacity: dict | None = None) -> str:
    run = analysis.get("run") or {}
    headline = analysis.get("headline") or {}
    lines = [f"### cachestorm: {_cell(run.get('label'))}", "", verdict_line(analysis), ""]
    if why := incomplete(run):
        lines += [f"**This run did not complete** ({_cell(why)}): its numbers cover only what was recorded "
                  "before that.", ""]
    lines += [line for warning in analysis.get("warnings") or [] for line in (f"**warning:** {_cell(warning)}", "")]
    lines += [f"strategy **{_cell(run.get('strategy'))}** · domain {_cell(run.get('domain'))} · experiment "
              f"{_cell(run.get('experiment'))} · {fmt(run.get('duration_s'), 's')}", "",
              # the promise is one finding among others (bold only when broken), disagreements bold
              *(f"{_cell(text)}  " if n == 0 and promise_held(analysis) else f"**{_cell(text)}**  "
                for n, text in enumerate(lead(analysis))), "",
              "| metric | value |", "| --- | ---: |"]
    shown = set(shown_metrics(analysis))
    for name in _RUN_METRICS:
        if name in shown:
            lines.append(f"| {metric_info(name).label} | {_cell(display(analysis, name))} |")
    nines = [n for n in metric_names([headline]) if n.startswith("nines_within_")]
    if nines:
        lines.append("| reads consistent within M s | "
                     + ", ".join(f"{n.removeprefix('nines_within_')}: {_cell(display(analysis, n))}" for n in nines)
                     + " |")
    faults = (analysis.get("db") or {}).get("faults") or []
    if faults:
        latency = analysis.get("latency") or {}
        during = [p["name"] for p in analysis.get("phases") or [] if p["kind"] == "during"]
        lines += ["", "| fault | window (since load start) | worst second p99 | DB peak | amplification | recovery | recovered last |",
                  "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
        from cachestorm.reports.html import load_start

        t0 = load_start(analysis)  # seconds since load start, as the charts
        for fault, phase in zip(faults, during + [None] * len(faults), strict=False):
            recovery = recovery_text(fault.get("recovery"))
            worst = (latency.get("worst_second_by_phase") or {}).get(phase) or {}
            lines.append(f"| {_cell(fault['fault'])} | {fault['t_start'] - t0:.1f}–{fault['t_end'] - t0:.1f} s | "
                         f"{fmt(worst.get('p99_ms'), 'ms')} | "
                         f"{fmt(fault.get('peak_queries_per_s'), 'q/s')} | {fmt(fault.get('amplification'), 'x')} | "
                         f"{recovery} | {_cell(fmt(fault.get('recovered_last')))} |")
    if capacity:
        lines += ["", render_capacity_markdown([capacity], heading="#### Capacity")]
    if gate is not None:
        lines += ["", render_gate_markdown(gate)]
    return "\n".join(lines) + "\n"


LEVEL_MARK = {"red": "🔴", "amber": "🟠", "green": "🟢"}


def verdict_line(analysis: dict, label: str | None = None) -> str:
    """headline.verdict: the line a summary opens with."""
    verdict = (analysis.get("headline") or {}).get("verdict") or {}
    level = verdict.get("level") or "amber"
    who = f"**{_cell(label)}**: " if label else ""
    text = verdict.get("text") or "no verdict (report.json predates headline.verdict; re-render it)"
    return f"{LEVEL_MARK.get(level, '')} **{level.upper()}** {who}{_cell(text)}"


def render_comparison_markdown(analyses: list[dict]) -> str:
    from cachestorm.reports.html import INCIDENT_ROWS, incident_display, run_names, run_recovery_text

    headlines = [a.get("headline") or {} for a in analyses]
    best = winners(headlines)
    runs = [a.get("run") or {} for a in analyses]
    labels = [str(r.get("label")) for r in runs]
    lines = [f"### cachestorm comparison ({len(analyses)} runs)", ""]
    lines += [line for a, name in zip(analyses, run_names(analyses), strict=True) for line in (verdict_line(a, name), "")]
    lines += ["best beyond noise in **bold** (docs/report-schema.md, \"Comparison\")", "",
              "| measure | " + " | ".join(f"{_cell(r.get('strategy'))} ({_cell(r.get('experiment'))})" for r in runs)
              + " |", "| --- |" + " ---: |" * len(runs)]
    for name, label in INCIDENT_ROWS:
        if name == "recovery":
            cells = [_cell(run_recovery_text(h)) for h in headlines]
        else:
            shown = [incident_display(a, name) for a in analyses]
            if all(text in (None, "not measured") for text in shown):
                continue
            cells = [f"**{_cell(t or '–')}**" if n in best.get(name, []) else _cell(t or "–")
                     for n, t in enumerate(shown)]
        lines.append(f"| {_cell(label)} | " + " | ".join(cells) + " |")
    for analysis, label in zip(analyses[1:], labels[1:], strict=True):
        comparison = compare_runs(analyses[0], analysis)
        if comparison["regressions"]:
            lines += ["", f"**Regressions of {_cell(label)} vs {_cell(labels[0])} (beyond noise):** " + ", ".join(
                _delta_text(row) for row in comparison["metrics"] if row["regression"])]
    return "\n".join(lines) + "\n"


def _delta_text(row: dict) -> str:
    relative = "" if row["relative"] is None else f" ({row['relative'] * 100:+.0f}%)"
    return f"{row['label']} {fmt(row['baseline'], row['unit'])} → {fmt(row['candidate'], row['unit'])}{relative}"


def render_gate_markdown(gate) -> str:
    verdict = "passed" if gate.passed else f"**failed** ({len(gate.failures)} of {len(gate.results)})"
    lines = [f"#### SLO gate: {verdict}", "", "| | SLO | run | value | limit | detail |",
             "| --- | --- | --- | ---: | ---: | --- |"]
    for result in gate.results:
        mark = "skipped" if result.skipped else ("✅" if result.passed else "❌")
        lines.append(f"| {mark} | {_cell(result.name)} | {_cell(result.run or '–')} | {_cell(fmt(result.value))} | "
                     f"{result.bound} {fmt(result.limit)} | {_cell(result.message)} |")
    return "\n".join(lines) + "\n"


def render_capacity_markdown(capacities: list[dict], heading: str = "### cachestorm capacity") -> str:
    """Knee per strategy, then every step (capacity.json from reports/capacity.py)."""
    slo = (capacities[0].get("slo") or {}) if capacities else {}
    lines = [heading, "", f"SLO: p99 ≤ {fmt(slo.get('p99_ms'), 'ms')}, error rate ≤ {fmt(slo.get('max_error_rate'))}, "
             f"achieved ≥ {fmt((slo.get('min_achieved_fraction') or 0) * 100)}% of offered", "",
             "| strategy | knee (achieved) | offered | p99 at knee | DB queries / 1k at knee |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for capacity in capacities:
        knee = capacity.get("knee") or {}
        lines.append(f"| {_cell((capacity.get('run') or {}).get('strategy'))} | "
                     f"{fmt(knee.get('achieved_per_s'), 'req/s') if knee else 'none'} | "
                     f"{fmt(knee.get('offered_per_s'), '/s')} | {fmt(knee.get('p99_ms'), 'ms')} | "
                     f"{fmt(knee.get('db_queries_per_1k'))} |")
    for capacity in capacities:
        knee = (capacity.get("knee") or {}).get("step")
        lines += ["", f"**{_cell((capacity.get('run') or {}).get('strategy'))}**: {_cell(capacity.get('note'))}", "",
                  "| step | offered | achieved | p50 | p99 | error rate | DB q / 1k (targets) | DB / 1k (PostgreSQL) "
                  "| verdict |", "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for step in capacity.get("steps") or []:
            pg = step.get("pg_calls_per_1k") if step.get("pg_calls_per_1k") is not None else step.get(
                "pg_xact_commit_per_1k")
            verdict = "pass" if step["passed"] else "; ".join(step["reasons"])
            lines.append(f"| {step['step'] + 1}{' (knee)' if step['step'] == knee else ''} | "
                         f"{fmt(step['offered_per_s'], '/s')} | {fmt(step.get('achieved_per_s'), '/s')} | "
                         f"{fmt(step.get('p50_ms'), 'ms')} | {fmt(step.get('p99_ms'), 'ms')} | "
                         f"{fmt(step.get('error_rate'))} | {fmt(step.get('db_queries_per_1k'))} | {fmt(pg)} | "
                         f"{_cell(verdict)} |")
    return "\n".join(lines) + "\n"
