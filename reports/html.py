"""Self-contained HTML reports (one run, or a comparison): inline CSS, inline SVG, a little inline JS.

Nothing is fetched: the files open offline. The script only makes tables sortable and marks
<body data-render-ok="<charts>"> when it finished, or data-render-error when anything threw.
"""

from __future__ import annotations

import math
from html import escape

from cachestorm.reports.compare import compare_runs, metric_names, winners
from cachestorm.reports.headline import (
    display,
    format_number,
    lead,
    metric_info,
    recovery_text,
    shown_metrics,
)
from cachestorm.reports.svg import Chart, Line, render, share_x

from cachestorm.core import plugins
from cachestorm.core.runfiles import incomplete

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1b1f23;max-width:1352px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#586069;margin-bottom:12px}table{border-collapse:collapse;margin:6px 0 12px}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:right;vertical-align:top}
th{background:#f6f8fa;cursor:pointer;user-select:none}td:first-child,th:first-child{text-align:left}
td.winner{background:#dafbe1;font-weight:600}td.regression{background:#ffebe9;color:#a40e26;font-weight:600}
td.improvement{background:#dafbe1}.bad{color:#a40e26;font-weight:600}.good{color:#1a7f37}
.charts{display:flex;flex-wrap:wrap;gap:8px}svg.chart{background:#fff;border:1px solid #e1e4e8}
svg .chart-title{font-weight:600;font-size:13px}svg .tick,svg .legend,svg .axis-label,svg .note{font-size:11px;fill:#444}
svg .grid{stroke:#eee}svg .axis{stroke:#888}svg rect.fault{fill:#d62728;fill-opacity:.12}
code{font-size:12px}details{margin:4px 0 10px}.note{color:#586069}summary{cursor:pointer;font-weight:600}
svg .fault-label{font-size:11px;fill:#a40e26}svg .chart-note{font-style:italic}
.verdict{border-left:6px solid #888;padding:8px 12px;margin:10px 0 14px;font-size:15px;max-width:1100px}
.verdict.red{border-color:#cf222e;background:#ffebe9}.verdict.amber{border-color:#bf8700;background:#fff8c5}
.verdict.green{border-color:#1a7f37;background:#dafbe1}.verdict .level{font-weight:700;text-transform:uppercase;margin-right:6px}
.verdicts .verdict{margin:6px 0;font-size:14px}
table.incident{table-layout:fixed}table.incident th,table.incident td{overflow-wrap:anywhere}
table.incident col.measure{width:300px}
"""

_SCRIPT = """
(function(){
  function cellValue(cell){
    var text=(cell.getAttribute('data-sort')||cell.textContent||'').trim();
    var number=parseFloat(text.replace(/[^0-9eE+.-]/g,''));
    return isNaN(number)?text.toLowerCase():number;
  }
  function sortBy(table,column,ascending){
    var body=table.tBodies[0]; if(!body){return;}
    var rows=Array.prototype.slice.call(body.rows);
    rows.sort(function(a,b){
      var x=cellValue(a.cells[column]),y=cellValue(b.cells[column]);
      if(typeof x!==typeof y){x=String(x);y=String(y);}
      return (x<y?-1:x>y?1:0)*(ascending?1:-1);
    });
    rows.forEach(function(row){body.appendChild(row);});
  }
  var tables=document.querySelectorAll('table.sortable');
  Array.prototype.forEach.call(tables,function(table){
    var head=table.tHead; if(!head){return;}
    Array.prototype.forEach.call(head.rows[0].cells,function(th,column){
      th.title='click to sort';
      th.addEventListener('click',function(){
        var ascending=th.getAttribute('data-ascending')!=='true';
        th.setAttribute('data-ascending',String(ascending));
        sortBy(table,column,ascending);
      });
    });
  });
  var charts=document.querySelectorAll('svg.chart').length;
  document.body.setAttribute('data-render-ok',String(charts));
})();
"""


def fmt(value, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    return format_number(value, unit)


def _page(title: str, body: str) -> str:
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
            "<script>window.onerror=function(message){document.body.setAttribute('data-render-error',"
            "String(message));};</script>"
            f"{body}<script>{_SCRIPT}</script></body></html>")


def _table(headers: list[str], rows: list[list[str]], sortable: bool = True) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cell if cell.startswith("<td") else f"<td>{cell}</td>" for cell in row)
                   + "</tr>" for row in rows)
    return (f'<table class="{"sortable" if sortable else ""}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def load_start(analysis: dict) -> float:
    """Seconds from run start to load start: every chart's x is seconds since load start."""
    phases = analysis.get("phases") or []
    return float(phases[0]["t_start"]) if phases else 0.0


def _fault_name(phase: dict) -> str:
    return str(phase.get("fault") or phase["name"]).removeprefix("fault ")


def _shaded(analysis: dict) -> list[tuple[float, float, str]]:
    """The "during" phases: a fault's effect window (an instantaneous expiry still gets its seconds),
    in seconds since load start, named after the fault."""
    t0 = load_start(analysis)
    return [(p["t_start"] - t0, p["t_end"] - t0, _fault_name(p)) for p in analysis.get("phases") or []
            if p.get("kind") == "during"]


# per-second data [s, s+1) is drawn at its centre, so a spike is never drawn before its fault's band
SECOND_CENTRE = 0.5


def _series(points: list[dict], field: str, t0: float = 0.0) -> list[tuple[float, float | None]]:
    return [(p["t"] + SECOND_CENTRE - t0, p.get(field)) for p in points]


# a bound this many times above the data is written on the chart, not drawn (it would flatten the data)
BOUND_DRAWN_UP_TO = 3.0


# ---------------------------------------------------------------- one run

def run_charts(analysis: dict) -> list[Chart]:
    shaded = _shaded(analysis)
    t0 = load_start(analysis)
    latency = analysis.get("latency") or {}
    series = latency.get("series") or []
    source = latency.get("source") or "no latency data"
    charts = [Chart(f"Latency percentiles per second ({source})", "ms", [
        Line("p50", _series(series, "p50_ms", t0)), Line("p99", _series(series, "p99_ms", t0)),
        Line("p99.9", _series(series, "p999_ms", t0))], shaded, chart_id="latency")]
    db = (analysis.get("db") or {}).get("series") or {}
    names = {"target_reads": "DB reads that ran (targets)", "target_read_attempts": "DB read attempts (targets)",
             "target_all": "all DB queries (targets)", "pg_reads": "reads (PostgreSQL)",
             "pg_calls": "statements (PostgreSQL)", "pg_xact_commit": "commits (PostgreSQL)"}
    charts.append(Chart("DB queries per second", "queries/s",
                        [Line(label, _series(db.get(name) or [], "per_s", t0), dashed=name.startswith("pg"))
                         for name, label in names.items() if db.get(name)], shaded, chart_id="db"))
    cache = (analysis.get("cache") or {}).get("series") or []
    charts.append(Chart("Cache hit ratio", "served from cache / lookups",
                        [Line("hit ratio", _series(cache, "hit_ratio", t0))], shaded, y_max=1.0, chart_id="hit-ratio"))
    errors = (analysis.get("errors") or {}).get("series") or []
    kinds = sorted({kind for p in errors for kind in p.get("by_kind") or {}})
    error_lines = [Line("errors", _series(errors, "errors", t0))]
    error_lines += [Line(kind, [(p["t"] + SECOND_CENTRE - t0, (p.get("by_kind") or {}).get(kind, 0)) for p in errors])
                    for kind in kinds]
    charts.append(Chart("Errors per second (histories: sampled keys)", "errors/s", error_lines, shaded,
                        chart_id="errors"))
    consistency = analysis.get("consistency") or {}
    stale = (consistency.get("findings") or {}).get("stale_reads") or {}
    stale_points = _series(stale.get("series") or [], "max_staleness_s", t0)
    lines = [Line("worst staleness", stale_points, color="#d62728")]
    bound = consistency.get("staleness_bound_s")
    note = ""
    if bound is not None and stale_points:
        worst = max((y for _, y in stale_points if y is not None), default=0.0)
        if bound <= BOUND_DRAWN_UP_TO * max(worst, 1.0):
            span = [x for x, _ in _series(series or stale.get("series") or [], "t", t0)]
            lines.append(Line("declared bound", [(min(span), bound), (max(span), bound)], color="#555", dashed=True))
        else:
            note = (f"declared staleness bound: {bound:,.0f} s, far above the data (worst {worst:.1f} s): "
                    "written here, not drawn")
    charts.append(Chart("Stale reads: staleness per second", "seconds", lines, shaded, chart_id="staleness",
                        note=note))
    return share_x(charts)


# a run report's sections after its headline, in order: name -> "module:function", where
# function(analysis) returns the section's HTML ("" leaves it out)
SECTIONS: dict[str, str] = plugins.registry("report-section", {
    "baseline": "cachestorm.reports.html:baseline_section",
    "latency": "cachestorm.reports.html:latency_section",
    "faults": "cachestorm.reports.html:faults_section",
    "errors": "cachestorm.reports.html:errors_section",
    "consistency": "cachestorm.reports.html:consistency_section",
    "probes": "cachestorm.reports.html:probes_section",
})


def verdict_html(analysis: dict, label: str | None = None) -> str:
    """headline.verdict as the block a report opens with (a line per run on a comparison)."""
    verdict = (analysis.get("headline") or {}).get("verdict") or {}
    level = verdict.get("level") if verdict.get("level") in ("red", "amber", "green") else "amber"
    text = verdict.get("text") or "no verdict: this run's report.json predates headline.verdict; re-render it"
    who = f"<b>{escape(label)}</b>: " if label else ""
    return (f'<div class="verdict {level}" data-level="{level}"><span class="level">{level}</span>'
            f"{who}{escape(text)}</div>")


def render_run_html(analysis: dict, capacity: dict | None = None) -> str:
    run = analysis.get("run") or {}
    title = f"cachestorm report: {run.get('label')}"
    parts = [f"<h1>{escape(title)}</h1>",
             f'<div class="meta">strategy <b>{escape(str(run.get("strategy")))}</b> · domain '
             f'{escape(str(run.get("domain")))} · experiment {escape(str(run.get("experiment")))} · '
             f'{fmt(run.get("duration_s"), "s")} · run <code>{escape(str(run.get("run_id")))}</code></div>',
             f'<div id="verdict">{verdict_html(analysis)}</div>']
    if why := incomplete(run):
        parts.append(f'<p class="bad"><b>This run did not complete</b> ({escape(why)}): its numbers cover '
                     "only what was recorded before that.</p>")
    parts += [f'<p class="bad"><b>warning:</b> {escape(w)}</p>' for w in analysis.get("warnings") or []]
    promise = (analysis.get("consistency") or {}).get("promise") or {}
    # the promise is one finding among others: red when broken, never a green headline of its own
    parts += [f'<p class="{"bad" if n or not promise.get("held") else "note"}">{escape(text)}</p>'
              for n, text in enumerate(lead(analysis))]
    parts.append('<h2>Charts</h2><div class="charts">' + "".join(render(c) for c in run_charts(analysis)) + "</div>")
    headline = analysis.get("headline") or {}
    rows = [[escape(metric_info(name).label), f'<td data-sort="{_sort_key(headline.get(name))}">'
             f"{escape(display(analysis, name))}</td>"]
            for name in shown_metrics(analysis)]
    parts.append("<h2>Headline</h2>" + _table(["metric", "value"], rows))
    parts += [plugins.load(spec, "report section")(analysis) for spec in SECTIONS.values()]
    if capacity:
        parts.append(capacity_section_html([capacity]))
    return _page(title, "".join(parts))


_BASELINE_LIMITS = {"p99_ms": ("clients' p99", "ms"), "error_rate": ("error rate", ""),
                    "pool_timeouts": ("pool timeouts", ""), "db_slot_utilisation": ("DB slot utilisation (PostgreSQL)", "")}


def baseline_section(analysis: dict) -> str:
    """headline.baseline: the steady state before the first fault against the limits it is judged by."""
    headline = analysis.get("headline") or {}
    baseline = headline.get("baseline")
    if not isinstance(baseline, dict):
        return ""
    rows = []
    for name, (label, unit) in _BASELINE_LIMITS.items():
        entry = baseline.get(name)
        if not isinstance(entry, dict):
            continue
        broke = bool(entry.get("broke"))
        rows.append([escape(label), escape(fmt(entry.get("value"), unit)), escape(fmt(entry.get("limit"), unit)),
                     f'<td class="{"bad" if broke else "good"}">{"broke the limit" if broke else "within"}</td>'])
    healthy = headline.get("baseline_healthy")
    verdict = ("healthy" if healthy else "UNHEALTHY before any fault" if healthy is False else "not judged")
    settle = baseline.get("settle_s")
    note = f"steady state before the first fault{f', after a {fmt(settle, chr(115))} settle' if settle else ''}"
    return (f'<h2>Baseline: <span class="{"good" if healthy else "bad" if healthy is False else ""}">'
            f"{escape(verdict)}</span></h2><p class=\"note\">{escape(note)}</p>"
            + _table(["measure", "value", "limit", "verdict"], rows, False))


def probes_section(analysis: dict) -> str:
    probes = analysis.get("probes") or []
    if not probes:
        return ""
    rows = []
    for probe in probes:
        deviated = probe["outcomes"].get("deviated", 0)
        outcomes = ", ".join(f"{k}: {v}" for k, v in sorted(probe["outcomes"].items()))
        rows.append([escape(probe["name"]), escape(str(probe.get("metric"))),
                     escape(f"{fmt(probe.get('min'))} .. {fmt(probe.get('max'))}"), escape(fmt(probe["checks"])),
                     f'<td class="{"bad" if deviated else "good"}">{escape(outcomes)}</td>',
                     escape(fmt(probe.get("worst_value"))), escape(fmt(probe.get("first_deviation_t"), "s"))])
    return "<h2>Steady-state probes</h2>" + _table(
        ["probe", "metric", "range", "checks", "outcomes", "worst value", "first deviation"], rows)


def _sort_key(value) -> str:
    if value == "all":
        return "1e308"
    return "" if value is None or isinstance(value, str) else str(value)


def latency_section(analysis: dict) -> str:
    latency = analysis.get("latency") or {}
    rows = []
    for name, summary in [("whole run", latency.get("overall")), ("during faults", latency.get("during_fault")),
                          *(latency.get("by_phase") or {}).items(), *(
                              (f"kind: {k}", v) for k, v in (latency.get("by_kind") or {}).items())]:
        summary = summary or {}
        rows.append([escape(name)] + [escape(fmt(summary.get(f), "" if f == "count" else "ms"))
                                      for f in ("count", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms")])
    note = " (Locust's rounded per-second percentiles; a phase shows its worst second)" if latency.get(
        "approximate") else ""
    return (f"<h2>Latency</h2><p class=\"note\">source: {escape(str(latency.get('source')))}{escape(note)}</p>"
            + _table(["phase", "count", "p50", "p90", "p99", "p99.9", "max"], rows))


def faults_section(analysis: dict) -> str:
    db = analysis.get("db") or {}
    latency = analysis.get("latency") or {}
    rows = []
    t0 = load_start(analysis)  # windows in seconds since load start, as the charts
    for fault, phase in zip(db.get("faults") or [], [p for p in analysis.get("phases") or []
                                                     if p["kind"] == "during"], strict=False):
        hot = fault.get("hot_key_expiry") or {}
        during = (latency.get("by_phase") or {}).get(phase["name"]) or {}
        worst = (latency.get("worst_second_by_phase") or {}).get(phase["name"]) or {}
        rows.append([escape(fault["fault"]), escape(f"{fault['t_start'] - t0:.1f}–{fault['t_end'] - t0:.1f} s"),
                     escape(fmt(during.get("p99_ms"), "ms")),
                     escape(f"{fmt(worst.get('p99_ms'), 'ms')} / {fmt(worst.get('p999_ms'), 'ms')}"),
                     escape(fmt(fault.get("peak_queries_per_s"), "q/s")),
                     escape(fmt(fault.get("amplification"), "x")), escape(fmt(_pg_amplification(fault), "x")),
                     escape(f"{fmt(hot.get('db_reads_per_key'))} ran / {fmt(hot.get('db_read_attempts_per_key'))} "
                            "attempted"), escape(fmt(hot.get("recomputes_per_key"))),
                     escape(recovery_text(fault.get("recovery")))])
    steady = (f"steady state (median before the first fault): {fmt(db.get('steady_queries_per_s'), 'q/s')} "
              f"(amplification divides by at least {fmt(db.get('steady_floor_per_s'), 'q/s')}), "
              f"p99 {fmt(db.get('steady_p99_ms'), 'ms')}; DB source: {db.get('source')}")
    if not rows:
        return f"<h2>Faults</h2><p class=\"note\">no faults in this run; {escape(steady)}</p>"
    return ("<h2>Faults</h2>" + f"<p class=\"note\">{escape(steady)}</p>"
            + _table(["fault", "window (since load start)", "p99 (window)", "worst second p99 / p99.9", "DB peak",
                      "amplification", "amplification (PostgreSQL)",
                      "DB reads / expired key",
                      "recomputes / expired key", "recovery"], rows))


def _pg_amplification(fault: dict) -> float | None:
    by_source = fault.get("by_source") or {}
    for name in ("pg_reads", "pg_calls", "pg_xact_commit"):
        if name in by_source:
            return by_source[name]["amplification"]
    return None


def errors_section(analysis: dict) -> str:
    """Error counts by kind, one column per source: the histories cover the sampled keys only, Locust
    every request, so their counts differ; each is labelled with its source."""
    errors = analysis.get("errors") or {}
    history = errors.get("by_kind") or {}
    locust = errors.get("locust_failures_by_kind") or {}
    kinds = list(dict.fromkeys([*locust, *history]))
    rows = [[escape(kind), escape(fmt(history.get(kind)) if kind in history else "–"),
             escape(fmt(locust.get(kind)) if kind in locust else "–")] for kind in kinds]
    rows.append(["<b>all errors</b>", escape(fmt(sum(history.values())) if history else "–"),
                 escape(fmt(sum(locust.values())) if locust else "–")])
    attempts = errors.get("attempts")
    text = (f"error rate {fmt(errors.get('error_rate'))} (source: {errors.get('error_rate_source')}); "
            f"the histories hold {fmt(errors.get('operations'))} operations of the sampled keys; "
            f"pool timeouts reported by the targets: {fmt(errors.get('pool_timeouts_reported_by_targets'))}")
    if attempts:
        text += (f"; {fmt(attempts['logical_requests'])} logical requests, {fmt(attempts['mean_attempts'])} "
                 f"attempts each on average, {fmt(attempts['retried_requests'])} retried")
    return (f"<h2>Errors</h2><p class=\"note\">{escape(text)}</p>"
            + _table(["kind", "histories (sampled keys)", "Locust (every request)"], rows))


_EXAMPLE_FIELDS = ("key", "op", "t_start", "t_end", "version", "source", "user", "request_id", "status")


def _examples(examples: list[dict]) -> str:
    if not examples:
        return ""
    extra = sorted({k for e in examples for k in e if k not in _EXAMPLE_FIELDS and k not in (
        "start_ns", "end_ns", "start_wall", "operation")})
    rows = [[escape(fmt(e.get(f))) for f in _EXAMPLE_FIELDS + tuple(extra)] for e in examples]
    return "<details><summary>examples</summary>" + _table(list(_EXAMPLE_FIELDS) + extra, rows, False) + "</details>"


def consistency_section(analysis: dict) -> str:
    consistency = analysis.get("consistency")
    if not consistency:
        return "<h2>Consistency</h2><p class=\"note\">no histories in this run: nothing checked</p>"
    findings = consistency["findings"]
    stale = findings["stale_reads"]
    counters = findings["counters"]
    promise = consistency.get("promise") or {}
    parts = ["<h2>Consistency</h2>",
             f'<p class="{"good" if promise.get("held") else "bad"}"><b>{escape(promise.get("text", ""))}</b></p>',
             f"<p class=\"note\">{fmt(consistency['operations'])} operations, "
             f"{fmt(consistency['reads_checked'])} reads checked; declared staleness bound "
             f"{escape(fmt(consistency.get('staleness_bound_s'), 's'))}</p>"]
    spread = stale.get("staleness_s") or {}
    rows = [
        # within the declared bound a stale read is the promise, not an alarm: red only beyond it
        ["stale reads", _count(stale["count"], bad=bool(promise.get("beyond", stale["count"]))), escape(
            f"p50 {fmt(spread.get('p50'), 's')}, p99 {fmt(spread.get('p99'), 's')}, max {fmt(spread.get('max'), 's')}; "
            f"over bound: {fmt(stale.get('over_bound'))}")],
        ["read-your-writes violations", _count(findings["read_your_writes"]["count"]),
         escape(f"{fmt(findings['read_your_writes']['reads_checked'])} own reads checked")],
        ["lost writes", _count(findings["lost_writes"]["count"]) if findings["lost_writes"]["checked"] else "–",
         escape(findings["lost_writes"].get("note", "acknowledged, absent from PostgreSQL at the end"))],
        ["counters: lost increments", _count(counters["lost"]["count"]) if counters["checked"] else "–",
         escape(counters.get("note") or f"amount {fmt(counters['lost']['amount'])}")],
        ["counters: duplicated increments", _count(counters["duplicated"]["count"]) if counters["checked"] else "–",
         escape(f"indeterminate (timeouts): {fmt(counters['indeterminate_total'])}")],
        ["granted after revoke", _count(findings["revoked_granted"]["count"]),
         escape(f"bound {fmt(findings['revoked_granted']['bound_s'], 's')} (the domain's own); the targets' own "
                f"count: {fmt((analysis.get('cache') or {}).get('permission_violations'))}")],
    ]
    domain = (analysis.get("run") or {}).get("domain")
    foreign = {"counters": ("counters: lost increments", "counters: duplicated increments"),
               "permissions": ("granted after revoke",)}
    hidden = {title for owner, titles in foreign.items() if domain and domain != owner for title in titles}
    rows = [row for row in rows if row[0] not in hidden]  # another domain's findings: not this report's
    parts.append(_table(["finding", "count", "detail"], rows, False))
    parts += [f'<p class="bad">warning: {escape(w)}</p>' for w in consistency.get("warnings") or []]
    for title, examples in (("stale reads (worst first)", stale["examples"]),
                            ("read-your-writes", findings["read_your_writes"]["examples"]),
                            ("lost writes", findings["lost_writes"]["examples"]),
                            ("granted after revoke", findings["revoked_granted"]["examples"])):
        if examples:
            parts.append(f"<h3>{escape(title)}</h3>{_examples(examples)}")
    for title in ("lost", "duplicated"):
        if counters[title]["examples"]:
            rows = [[escape(str(e["key"])), fmt(e["acked"]), fmt(e["indeterminate"]), fmt(e["db"]),
                     fmt(e["difference"])] for e in counters[title]["examples"]]
            parts.append(f"<h3>counters: {title}</h3>"
                         + _table(["key", "acked", "indeterminate", "db", "difference"], rows, False))
    nines = [[escape(fmt(r["within_s"], "s")), escape(fmt(r["consistent"])), escape(fmt(r["total"])),
              escape(r["display"])] for r in findings["consistency_nines"]]
    parts.append("<h3>Reads consistent within M seconds</h3>"
                 + _table(["within", "consistent reads", "reads", "nines"], nines, False))
    return "".join(parts)


def _count(count: int, bad: bool | None = None) -> str:
    return f'<td class="{"bad" if (count if bad is None else bad) else "good"}">{fmt(count)}</td>'


# ---------------------------------------------------------------- several runs

# the measures that tell the incident, in this order: a comparison page's first table (rows, one column
# per run); every other figure is in its collapsed "all figures" table
INCIDENT_ROWS: tuple[tuple[str, str], ...] = (
    ("error_rate", "requests failed (error rate, Locust)"),
    ("pool_timeouts", "pool ran dry (pool timeouts, targets)"),
    ("timeouts", "client timeouts (every attempt)"),
    ("db_loads_per_expiry", "DB loads per hot-key expiry"),
    ("db_load_attempts_per_expiry", "DB load attempts per expiry (incl. refused at the pool)"),
    ("attempts_per_request_during_fault", "attempts per request during the fault"),
    ("p99_ms_fault_worst_second", "clients' p99, worst second of the fault"),
    ("p99_ms_before_fault", "clients' p99 before the fault"),
    ("db_p99_ms_before_fault", "DB query p99 before the fault"),
    ("db_p99_ms_during_fault", "DB query p99 during the fault"),
    ("db_amplification", "DB amplification"),
    ("recovery", "recovery"),
    ("hit_ratio", "hit ratio"),
    ("stale_reads_over_bound", "stale reads beyond the promised bound"),
)


def run_names(analyses: list[dict]) -> list[str]:
    """Each run by its strategy, and its experiment where the runs' experiments differ."""
    runs = [a.get("run") or {} for a in analyses]
    mixed = len({str(r.get("experiment")) for r in runs}) > 1
    return [f"{r.get('strategy')} × {r.get('experiment') or 'no fault'}" if mixed else str(r.get("strategy"))
            for r in runs]


def run_recovery_text(headline: dict) -> str:
    """The run's one recovery (headline `recovery`, in headline.recovery_text's words); a run folder
    rendered before that object existed: the clients' view."""
    if isinstance(headline.get("recovery"), dict):
        return recovery_text(headline["recovery"])
    recovered = headline.get("recovered_on_its_own")
    if recovered is True:
        return f"recovered in {fmt(headline.get('time_to_recover_s'), 's')}"
    if recovered is False:
        return "not recovered"
    # a fault but under 3 s of load after it (incident.metastability): as the verdict says
    return "not judged" if headline.get("p99_ms_during_fault") is not None else "–"


def incident_display(analysis: dict, name: str) -> str | None:
    """As the report shows the figure, the error rate as a percentage."""
    value = (analysis.get("headline") or {}).get(name)
    if name == "error_rate" and isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value * 100:.3g} %"
    return display(analysis, name)


def _run_header(analysis: dict) -> str:
    run = analysis.get("run") or {}
    headline = analysis.get("headline") or {}
    unhealthy = '<br><span class="bad">unhealthy baseline</span>' if headline.get("baseline_healthy") is False else ""
    return (f'<th title="{escape(str(run.get("label")))}">{escape(str(run.get("strategy")))}<br>'
            f'<span class="note">{escape(str(run.get("experiment")))}</span>{unhealthy}</th>')


def _incident_width(runs: int) -> str:
    """300 px of measure names and ~210 px per run, never wider than the page (the cells wrap)."""
    return f"width:min(100%,{300 + 210 * runs}px)"


def incident_table(analyses: list[dict]) -> str:
    headlines = [a.get("headline") or {} for a in analyses]
    best = winners(headlines)
    rows = []
    for name, label in INCIDENT_ROWS:
        if name == "recovery":
            cells = [f"<td>{escape(run_recovery_text(h))}</td>" for h in headlines]
        else:
            shown = [incident_display(a, name) for a in analyses]
            if all(text in (None, "not measured") for text in shown):
                continue  # no run measured it (e.g. attempts before the DB figures had them)
            cells = [f'<td{" class=winner" if n in best.get(name, []) else ""}>{escape(text or "–")}</td>'
                     for n, text in enumerate(shown)]
        rows.append(f'<tr data-measure="{escape(name)}"><td>{escape(label)}</td>{"".join(cells)}</tr>')
    return _runs_table(analyses, "incident", "measure", rows)


def all_figures_table(analyses: list[dict]) -> str:
    headlines = [a.get("headline") or {} for a in analyses]
    names = [n for n in metric_names(headlines) if any(display(a, n) is not None for a in analyses)]
    best = winners(headlines)
    rows = []
    for name in names:
        cells = [f'<td{" class=winner" if n in best.get(name, []) else ""}>{escape(display(a, name) or "–")}</td>'
                 for n, a in enumerate(analyses)]
        rows.append(f"<tr><td>{escape(metric_info(name).label)}</td>{''.join(cells)}</tr>")
    return _runs_table(analyses, "incident all-figures", "figure", rows)


def _runs_table(analyses: list[dict], css_class: str, first_header: str, rows: list[str]) -> str:
    """A table of figures as rows, one column per run, as wide as the runs need and never wider than the page."""
    cols = '<col class="measure">' + "<col>" * len(analyses)
    return (f'<table class="{css_class}" style="{_incident_width(len(analyses))}"><colgroup>{cols}</colgroup>'
            f'<thead><tr><th>{first_header}</th>{"".join(_run_header(a) for a in analyses)}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


NOISE_NOTE = ("Highlighted (green) only where a run is better than another beyond noise, by the rule "
              "`compare` and `--fail-on-regression` use: the difference must exceed both a relative and an "
              "absolute threshold of its metric (docs/report-schema.md, \"Comparison\"); a tie within noise "
              "shares the highlight.")


def render_comparison_html(analyses: list[dict]) -> str:
    labels = [str((a.get("run") or {}).get("label")) for a in analyses]
    title = f"cachestorm comparison: {len(analyses)} runs"
    parts = [f"<h1>{escape(title)}</h1>",
             '<div id="verdict" class="verdicts">' + "".join(
                 verdict_html(a, name) for a, name in zip(analyses, run_names(analyses), strict=True)) + "</div>",
             "<h2>The incident, side by side</h2>", incident_table(analyses),
             f'<p class="note">{escape(NOISE_NOTE)}</p>']
    parts.append('<h2>Charts</h2><div class="charts">' + "".join(
        render(c) for c in comparison_charts(analyses, labels)) + "</div>")
    parts.append("<h2>Everything else</h2>")
    parts.append(f"<details><summary>All figures ({len(metric_names([a.get('headline') or {} for a in analyses]))} "
                 "measures)</summary>" + all_figures_table(analyses) + "</details>")
    for analysis, label in zip(analyses[1:], labels[1:], strict=True):
        parts.append(_delta_section(compare_runs(analyses[0], analysis), labels[0], label))
    return _page(title, "".join(parts))


def _comparison_bands(analyses: list[dict]) -> list[tuple[float, float, str]]:
    """Every run's fault windows (seconds since its load start), once each: runs of one experiment share them."""
    bands: list[tuple[float, float, str]] = []
    for analysis in analyses:
        for start, end, name in _shaded(analysis):
            if not any(n == name and abs(s - start) < 1.0 for s, _, n in bands):
                bands.append((start, end, name))
    return bands


def comparison_charts(analyses: list[dict], labels: list[str]) -> list[Chart]:
    def lines(extract) -> list[Line]:
        return [Line(label, extract(a)) for a, label in zip(analyses, labels, strict=True)]

    def per_second(section, field: str, path=()):
        def extract(a: dict):
            data = a.get(section) or {}
            for key in path:
                data = (data or {}).get(key) or {}
            return _series(data.get("series") or [] if isinstance(data, dict) else data, field, load_start(a))
        return extract

    shaded = _comparison_bands(analyses)
    db_source = lambda a: (a.get("db") or {}).get("source")  # noqa: E731 - tiny accessor
    return share_x([
        Chart("p99 latency per second", "ms", lines(per_second("latency", "p99_ms")), shaded, chart_id="cmp-p99"),
        Chart("DB queries per second (each run's headline source)", "queries/s",
              lines(lambda a: _series(((a.get("db") or {}).get("series") or {}).get(db_source(a) or "", []),
                                      "per_s", load_start(a))), shaded, chart_id="cmp-db"),
        Chart("Cache hit ratio", "served from cache / lookups", lines(per_second("cache", "hit_ratio")), shaded,
              y_max=1.0, chart_id="cmp-hit"),
        Chart("Errors per second (histories: sampled keys)", "errors/s", lines(per_second("errors", "errors")),
              shaded, chart_id="cmp-errors"),
        Chart("Worst staleness per second", "seconds",
              lines(per_second("consistency", "max_staleness_s", ("findings", "stale_reads"))), shaded,
              chart_id="cmp-staleness"),
    ])


def _delta_section(comparison: dict, baseline: str, candidate: str) -> str:
    rows = []
    for row in comparison["metrics"]:
        css = "regression" if row["regression"] else "improvement" if row["improvement"] else ""
        relative = "" if row["relative"] is None else f"{row['relative'] * 100:+.1f}%"
        delta = fmt(row["delta"], row["unit"]) if row["delta"] is not None else ""
        verdict = ("regression" if row["regression"] else "better" if row["improvement"] else
                   "" if row.get("judged", True) else "not judged")
        rows.append([escape(row["label"]), escape(fmt(row["baseline"], row["unit"])),
                     escape(fmt(row["candidate"], row["unit"])),
                     f'<td class="{css}">{escape(delta)} {escape(relative)}</td>', escape(verdict)])
    worse, better = len(comparison["regressions"]), len(comparison["improvements"])
    return (f"<details><summary>{escape(candidate)} vs {escape(baseline)}: {better} better, {worse} worse "
            "beyond noise</summary>"
            + _table(["metric", baseline, candidate, "delta", "verdict (beyond noise)"], rows) + "</details>")


# ---------------------------------------------------------------- capacity (capacity.json, reports/capacity.py)

def capacity_charts(capacities: list[dict]) -> list[Chart]:
    """Throughput vs p99 and DB load per 1,000 requests, one line per strategy (x: achieved req/s)."""
    def label(capacity: dict) -> str:
        return str((capacity.get("run") or {}).get("strategy") or (capacity.get("run") or {}).get("label"))

    def points(capacity: dict, field: str) -> list[tuple[float, float | None]]:
        return [(s["achieved_per_s"], s.get(field)) for s in capacity.get("steps") or []
                if s.get("achieved_per_s") is not None]

    slo = min((c.get("slo") or {}).get("p99_ms") or math.inf for c in capacities)
    p99s = [s["p99_ms"] for c in capacities for s in c.get("steps") or [] if s.get("p99_ms") is not None]
    clip = 4 * slo if math.isfinite(slo) and p99s and max(p99s) > 4 * slo else None
    latency = [Line(label(c), points(c, "p99_ms")) for c in capacities]
    xs = [x for line in latency for x, _ in line.points]
    if math.isfinite(slo) and xs:
        latency.append(Line(f"p99 SLO {slo:g} ms", [(min(xs), slo), (max(xs), slo)], color="#555", dashed=True))
    db = [Line(f"{label(c)} (targets)", points(c, "db_queries_per_1k")) for c in capacities]
    db += [Line(f"{label(c)} (PostgreSQL)", points(c, "pg_calls_per_1k") if any(
        s.get("pg_calls_per_1k") is not None for s in c.get("steps") or []) else points(c, "pg_xact_commit_per_1k"),
        dashed=True) for c in capacities]
    return [Chart("p99 vs achieved throughput" + (f" (clipped at {clip:g} ms)" if clip else ""), "p99 ms",
                  latency, x_label="achieved requests/s", y_max=clip, chart_id="capacity-p99"),
            Chart("DB load per 1,000 requests vs achieved throughput", "queries / 1,000 requests",
                  [line for line in db if line.points], x_label="achieved requests/s", chart_id="capacity-db")]


def capacity_table_html(capacity: dict) -> str:
    knee = (capacity.get("knee") or {}).get("step")
    rows = []
    for step in capacity.get("steps") or []:
        css = "good" if step["passed"] else "bad"
        mark = " (knee)" if step["step"] == knee else ""
        rows.append([escape(f"{step['step'] + 1}{mark}"), escape(fmt(step["offered_per_s"], "/s")),
                     escape(fmt(step.get("sent_per_s"), "/s")), escape(fmt(step.get("achieved_per_s"), "/s")),
                     escape(fmt(step.get("p50_ms"), "ms")), escape(fmt(step.get("p99_ms"), "ms")),
                     escape(fmt(step.get("error_rate"))), escape(_per_1k(step.get("db_queries_per_1k"))),
                     escape(_per_1k(step.get("pg_calls_per_1k") if step.get("pg_calls_per_1k") is not None
                                    else step.get("pg_xact_commit_per_1k"))),
                     f'<td class="{css}">{escape("pass" if step["passed"] else "; ".join(step["reasons"]))}</td>'])
    return _table(["step", "offered", "sent", "achieved", "p50", "p99", "error rate", "DB queries / 1k (targets)",
                   "DB / 1k (PostgreSQL)", "verdict"], rows, False)


def _per_1k(value) -> str:
    return "–" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def capacity_section_html(capacities: list[dict]) -> str:
    slo = (capacities[0].get("slo") or {}) if capacities else {}
    parts = ["<h2>Capacity</h2>", f'<p class="note">open-model step load; a step passes with p99 ≤ '
             f'{escape(fmt(slo.get("p99_ms"), "ms"))}, error rate ≤ {escape(fmt(slo.get("max_error_rate")))} and '
             f'achieved ≥ {escape(fmt((slo.get("min_achieved_fraction") or 0) * 100))}% of offered; the first '
             f'{escape(fmt(slo.get("transition_s"), "s"))} of each step is skipped; latency from the intended '
             "send time</p>",
             '<div class="charts">' + "".join(render(c) for c in capacity_charts(capacities)) + "</div>"]
    for capacity in capacities:
        run = capacity.get("run") or {}
        knee = capacity.get("knee")
        verdict = (f"knee: {fmt(knee['achieved_per_s'], 'req/s')} (step {knee['step'] + 1})" if knee
                   else "knee: none")
        parts.append(f"<h3>{escape(str(run.get('strategy')))}: {escape(verdict)}</h3>"
                     f'<p class="note">{escape(str(capacity.get("note") or ""))}</p>' + capacity_table_html(capacity))
    return "".join(parts)


def render_capacity_html(capacities: list[dict]) -> str:
    title = f"cachestorm capacity: {len(capacities)} strategies"
    rows = []
    for capacity in capacities:
        run, knee = capacity.get("run") or {}, capacity.get("knee") or {}
        rows.append([escape(str(run.get("strategy"))), escape(fmt(knee.get("achieved_per_s"), "req/s")),
                     escape(fmt(knee.get("offered_per_s"), "/s")), escape(fmt(knee.get("p99_ms"), "ms")),
                     escape(_per_1k(knee.get("db_queries_per_1k"))), f"<code>{escape(str(run.get('run_id')))}</code>"])
    return _page(title, f"<h1>{escape(title)}</h1>" + "<h2>Knee per strategy</h2>"
                 + _table(["strategy", "knee (achieved)", "offered", "p99 at knee", "DB queries / 1k at knee",
                           "run"], rows) + capacity_section_html(capacities))
