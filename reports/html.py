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
from cachestorm.reports.svg import Chart, Line, render

from cachestorm.core import plugins
from cachestorm.core.runfiles import incomplete

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1b1f23;max-width:1200px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#586069;margin-bottom:12px}table{border-collapse:collapse;margin:6px 0 12px}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:right;vertical-align:top}
th{background:#f6f8fa;cursor:pointer;user-select:none}td:first-child,th:first-child{text-align:left}
td.winner{background:#dafbe1;font-weight:600}td.regression{background:#ffebe9;color:#a40e26;font-weight:600}
td.improvement{background:#dafbe1}.bad{color:#a40e26;font-weight:600}.good{color:#1a7f37}
.charts{display:flex;flex-wrap:wrap;gap:8px}svg.chart{background:#fff;border:1px solid #e1e4e8}
svg .chart-title{font-weight:600;font-size:13px}svg .tick,svg .legend,svg .axis-label,svg .note{font-size:11px;fill:#444}
svg .grid{stroke:#eee}svg .axis{stroke:#888}svg rect.fault{fill:#d62728;fill-opacity:.12}
code{font-size:12px}details{margin:4px 0 10px}.note{color:#586069}
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


def _shaded(analysis: dict) -> list[tuple[float, float, str]]:
    """The "during" phases: a fault's effect window (an instantaneous expiry still gets its seconds)."""
    return [(p["t_start"], p["t_end"], p["fault"] or p["name"]) for p in analysis.get("phases") or []
            if p.get("kind") == "during"]


# per-second data [s, s+1) is drawn at its centre, so a spike is never drawn before its fault's band
SECOND_CENTRE = 0.5


def _series(points: list[dict], field: str) -> list[tuple[float, float | None]]:
    return [(p["t"] + SECOND_CENTRE, p.get(field)) for p in points]


# ---------------------------------------------------------------- one run

def run_charts(analysis: dict) -> list[Chart]:
    shaded = _shaded(analysis)
    latency = analysis.get("latency") or {}
    series = latency.get("series") or []
    source = latency.get("source") or "no latency data"
    charts = [Chart(f"Latency percentiles per second ({source})", "ms", [
        Line("p50", _series(series, "p50_ms")), Line("p99", _series(series, "p99_ms")),
        Line("p99.9", _series(series, "p999_ms"))], shaded, chart_id="latency")]
    db = (analysis.get("db") or {}).get("series") or {}
    names = {"target_reads": "DB reads that ran (targets)", "target_read_attempts": "DB read attempts (targets)",
             "target_all": "all DB queries (targets)", "pg_reads": "reads (PostgreSQL)",
             "pg_calls": "statements (PostgreSQL)", "pg_xact_commit": "commits (PostgreSQL)"}
    charts.append(Chart("DB queries per second", "queries/s",
                        [Line(label, _series(db.get(name) or [], "per_s"), dashed=name.startswith("pg"))
                         for name, label in names.items() if db.get(name)], shaded, chart_id="db"))
    cache = (analysis.get("cache") or {}).get("series") or []
    charts.append(Chart("Cache hit ratio", "served from cache / lookups", [Line("hit ratio", _series(cache, "hit_ratio"))],
                        shaded, y_max=1.0, chart_id="hit-ratio"))
    errors = (analysis.get("errors") or {}).get("series") or []
    kinds = sorted({kind for p in errors for kind in p.get("by_kind") or {}})
    error_lines = [Line("errors", _series(errors, "errors"))]
    error_lines += [Line(kind, [(p["t"] + SECOND_CENTRE, (p.get("by_kind") or {}).get(kind, 0)) for p in errors])
                    for kind in kinds]
    charts.append(Chart("Errors per second", "errors/s", error_lines, shaded, chart_id="errors"))
    consistency = analysis.get("consistency") or {}
    stale = (consistency.get("findings") or {}).get("stale_reads") or {}
    stale_points = stale.get("series") or []
    lines = [Line("worst staleness", _series(stale_points, "max_staleness_s"), color="#d62728")]
    bound = consistency.get("staleness_bound_s")
    if bound is not None and stale_points:
        span = [p["t"] for p in (latency.get("series") or errors or stale_points)]
        lines.append(Line("declared bound", [(min(span), bound), (max(span), bound)], color="#555", dashed=True))
    charts.append(Chart("Stale reads: staleness per second", "seconds", lines, shaded, chart_id="staleness"))
    return charts


# a run report's sections after its headline, in order: name -> "module:function", where
# function(analysis) returns the section's HTML ("" leaves it out)
SECTIONS: dict[str, str] = plugins.registry("report-section", {
    "latency": "cachestorm.reports.html:latency_section",
    "faults": "cachestorm.reports.html:faults_section",
    "errors": "cachestorm.reports.html:errors_section",
    "consistency": "cachestorm.reports.html:consistency_section",
    "probes": "cachestorm.reports.html:probes_section",
})


def render_run_html(analysis: dict, capacity: dict | None = None) -> str:
    run = analysis.get("run") or {}
    title = f"cachestorm report: {run.get('label')}"
    parts = [f"<h1>{escape(title)}</h1>",
             f'<div class="meta">strategy <b>{escape(str(run.get("strategy")))}</b> · domain '
             f'{escape(str(run.get("domain")))} · experiment {escape(str(run.get("experiment")))} · '
             f'{fmt(run.get("duration_s"), "s")} · run <code>{escape(str(run.get("run_id")))}</code></div>']
    if why := incomplete(run):
        parts.append(f'<p class="bad"><b>This run did not complete</b> ({escape(why)}): its numbers cover '
                     "only what was recorded before that.</p>")
    parts += [f'<p class="bad"><b>warning:</b> {escape(w)}</p>' for w in analysis.get("warnings") or []]
    parts.append('<h2>Charts</h2><div class="charts">' + "".join(render(c) for c in run_charts(analysis)) + "</div>")
    headline = analysis.get("headline") or {}
    rows = [[escape(metric_info(name).label), f'<td data-sort="{_sort_key(headline.get(name))}">'
             f"{escape(display(analysis, name))}</td>"]
            for name in shown_metrics(analysis)]
    promise = (analysis.get("consistency") or {}).get("promise") or {}
    lead_lines = "".join(
        f'<p class="{"good" if n == 0 and promise.get("held") else "bad" if n or not promise.get("held") else ""}">'
        f"{escape(text)}</p>" for n, text in enumerate(lead(analysis)))
    parts.append("<h2>Headline</h2>" + lead_lines + _table(["metric", "value"], rows))
    parts += [plugins.load(spec, "report section")(analysis) for spec in SECTIONS.values()]
    if capacity:
        parts.append(capacity_section_html([capacity]))
    return _page(title, "".join(parts))


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
    for fault, phase in zip(db.get("faults") or [], [p for p in analysis.get("phases") or []
                                                     if p["kind"] == "during"], strict=False):
        hot = fault.get("hot_key_expiry") or {}
        during = (latency.get("by_phase") or {}).get(phase["name"]) or {}
        worst = (latency.get("worst_second_by_phase") or {}).get(phase["name"]) or {}
        rows.append([escape(fault["fault"]), escape(f"{fault['t_start']:.1f}–{fault['t_end']:.1f} s"),
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
            + _table(["fault", "window", "p99 (window)", "worst second p99 / p99.9", "DB peak",
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
    errors = analysis.get("errors") or {}
    rows = [[escape(kind), escape(fmt(count))] for kind, count in (errors.get("by_kind") or {}).items()]
    rows += [[escape(f"locust: {kind}"), escape(fmt(count))]
             for kind, count in (errors.get("locust_failures_by_kind") or {}).items()]
    rows.append(["pool timeouts (targets)", escape(fmt(errors.get("pool_timeouts_reported_by_targets")))])
    attempts = errors.get("attempts")
    text = (f"error rate {fmt(errors.get('error_rate'))} (source: {errors.get('error_rate_source')}); "
            f"the histories hold {fmt(errors.get('operations'))} operations of the sampled keys")
    if attempts:
        text += (f"; {fmt(attempts['logical_requests'])} logical requests, {fmt(attempts['mean_attempts'])} "
                 f"attempts each on average, {fmt(attempts['retried_requests'])} retried")
    return f"<h2>Errors</h2><p class=\"note\">{escape(text)}</p>" + _table(["kind", "count"], rows)


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

def render_comparison_html(analyses: list[dict]) -> str:
    labels = [str((a.get("run") or {}).get("label")) for a in analyses]
    headlines = [a.get("headline") or {} for a in analyses]
    names = [n for n in metric_names(headlines) if any(display(a, n) is not None for a in analyses)]
    best = winners(headlines)
    title = f"cachestorm comparison: {len(analyses)} runs"
    parts = [f"<h1>{escape(title)}</h1>", '<div class="meta">best value per column highlighted '
             "(lower p99 wins, fewer DB loads wins, higher hit ratio wins, …)</div>"]
    header = ["run", "strategy", "experiment"] + [
        f"{metric_info(n).label}" + (f" ({metric_info(n).unit})" if metric_info(n).unit else "") for n in names]
    rows = []
    for index, (analysis, headline) in enumerate(zip(analyses, headlines, strict=True)):
        run = analysis.get("run") or {}
        row = [escape(labels[index]), escape(str(run.get("strategy"))), escape(str(run.get("experiment")))]
        for name in names:
            css = ' class="winner"' if index in best.get(name, []) else ""
            row.append(f'<td{css} data-sort="{_sort_key(headline.get(name))}">'
                       f"{escape(display(analysis, name) or '–')}</td>")
        rows.append(row)
    parts.append("<h2>Side by side</h2>" + _table(header, rows))
    parts.append('<h2>Charts</h2><div class="charts">' + "".join(
        render(c) for c in comparison_charts(analyses, labels)) + "</div>")
    for analysis, label in zip(analyses[1:], labels[1:], strict=True):
        parts.append(_delta_section(compare_runs(analyses[0], analysis), labels[0], label))
    return _page(title, "".join(parts))


def comparison_charts(analyses: list[dict], labels: list[str]) -> list[Chart]:
    def lines(extract) -> list[Line]:
        return [Line(label, extract(a)) for a, label in zip(analyses, labels, strict=True)]

    shaded = _shaded(analyses[0]) if analyses else []
    db_source = lambda a: (a.get("db") or {}).get("source")  # noqa: E731 - tiny accessor
    return [
        Chart("p99 latency per second", "ms",
              lines(lambda a: _series((a.get("latency") or {}).get("series") or [], "p99_ms")), shaded,
              chart_id="cmp-p99"),
        Chart("DB queries per second (each run's headline source)", "queries/s",
              lines(lambda a: _series(((a.get("db") or {}).get("series") or {}).get(db_source(a) or "", []),
                                      "per_s")), shaded,
              chart_id="cmp-db"),
        Chart("Cache hit ratio", "served from cache / lookups",
              lines(lambda a: _series((a.get("cache") or {}).get("series") or [], "hit_ratio")), shaded,
              y_max=1.0, chart_id="cmp-hit"),
        Chart("Errors per second", "errors/s",
              lines(lambda a: _series((a.get("errors") or {}).get("series") or [], "errors")),
              shaded, chart_id="cmp-errors"),
        Chart("Worst staleness per second", "seconds",
              lines(lambda a: _series((((a.get("consistency") or {}).get("findings") or {}).get("stale_reads")
                                       or {}).get("series") or [], "max_staleness_s")), shaded,
              chart_id="cmp-staleness"),
    ]


def _delta_section(comparison: dict, baseline: str, candidate: str) -> str:
    rows = []
    for row in comparison["metrics"]:
        css = "regression" if row["regression"] else "improvement" if row["improvement"] else ""
        relative = "" if row["relative"] is None else f"{row['relative'] * 100:+.1f}%"
        delta = fmt(row["delta"], row["unit"]) if row["delta"] is not None else ""
        rows.append([escape(row["label"]), escape(fmt(row["baseline"], row["unit"])),
                     escape(fmt(row["candidate"], row["unit"])),
                     f'<td class="{css}">{escape(delta)} {escape(relative)}</td>',
                     escape("regression" if row["regression"] else "better" if row["improvement"] else "")])
    return (f"<h2>{escape(candidate)} vs {escape(baseline)}</h2>"
            + _table(["metric", baseline, candidate, "delta", "verdict"], rows))


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
