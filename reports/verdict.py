"""`headline.verdict`: what happened in a run, in one paragraph of plain words, and a level.

    {"level": "red" | "amber" | "green", "text": "The 10 hot keys expired at 8 s ...", "reasons": [...]}

The level is decided by what happened to the clients and the database (errors, timeouts, DB loads per
expiry, recovery, an unhealthy baseline, a run that did not complete, broken promises), never by the
staleness promise alone: a run that kept every read within its bound but failed 20 % of its requests is
red. The rule (docs/report-schema.md, "headline.verdict"):

- red: the run did not complete; the baseline was unhealthy before any fault; more than `RED_ERROR_RATE`
  of requests failed; more than `RED_LOADS_PER_EXPIRY` DB loads (or load attempts) per hot-key expiry;
  not recovered; a broken promise (stale reads beyond the bound, lost writes, ...).
- amber: any failed request, pool timeout or client timeout; more than `AMBER_LOADS_PER_EXPIRY` loads per
  expiry; more than `AMBER_ATTEMPTS` attempts per request in the fault window; the targets' DB count
  disagreeing with PostgreSQL's.
- green: none of these.

Times are seconds since the load started (the report's charts use the same axis).
"""

from __future__ import annotations

from cachestorm.reports.headline import recovery_text

from cachestorm.core.runfiles import incomplete

RED_ERROR_RATE = 0.01
RED_LOADS_PER_EXPIRY = 2.0
AMBER_LOADS_PER_EXPIRY = 1.5
AMBER_ATTEMPTS = 1.1
LEVELS = ("green", "amber", "red")


def build_verdict(analysis: dict) -> dict:
    """The verdict of one analysed run (report.json `headline.verdict`)."""
    headline = analysis.get("headline") or {}
    run = analysis.get("run") or {}
    red: list[str] = []
    amber: list[str] = []
    sentences: list[str] = []

    if why := incomplete(run):
        sentences.append(f"This run did not complete ({why}): its figures cover only what was recorded.")
        red.append("the run did not complete")
    if headline.get("baseline_healthy") is False:
        sentences.append(_unhealthy_baseline(headline.get("baseline") or {}))
        red.append("unhealthy baseline")

    sentences.append(_what_was_done(analysis))
    figures, bad = _figures(analysis)
    red += bad["red"]
    amber += bad["amber"]
    subject = _subject(run.get("strategy"))
    recovery = _recovery(analysis.get("headline") or {})
    if recovery and not recovery[1]:
        red.append("not recovered")
    tail = f"; {recovery[0]}" if recovery else ""
    sentences.append(f"{subject}: {', '.join(figures) or 'nothing went wrong'}{tail}.")
    sentences += _promises(analysis, red)

    level = "red" if red else "amber" if amber else "green"
    return {"level": level, "text": " ".join(s for s in sentences if s), "reasons": red or amber}


# ---------------------------------------------------------------- sentences

def _load_start(analysis: dict) -> float:
    phases = analysis.get("phases") or []
    return float(phases[0]["t_start"]) if phases else 0.0


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if abs(value - round(value)) < 0.15 else f"{value:.1f} s"


def _what_was_done(analysis: dict) -> str:
    t0 = _load_start(analysis)
    faults = [f for f in analysis.get("faults") or [] if f.get("outcome") == "applied" and f.get("t_start") is not None]
    if not faults:
        duration = (analysis.get("run") or {}).get("duration_s")
        return "No fault was injected" + (f" ({_seconds(float(duration))} of steady load)." if duration else ".")
    described = [_fault(f, t0) for f in faults]
    text = "; ".join(described)
    return text[0].upper() + text[1:] + "."


def _fault(fault: dict, t0: float) -> str:
    details = fault.get("details") or {}
    kind = str(details.get("fault") or fault.get("name") or "fault").removeprefix("fault ")
    start, end = fault["t_start"] - t0, (fault.get("t_end") or fault["t_start"]) - t0
    keys = details.get("keys")
    count = keys if isinstance(keys, int) else len(keys) if isinstance(keys, list) else None
    every = (details.get("settings") or {}).get("every_ms")
    if kind.startswith("hot-key-expiry"):
        what = f"the {count:,} hot keys expired" if count else "the hot keys expired"
        if every and end - start > 0.5:
            return f"{what} at {_seconds(start)} and again every {every / 1000:g} s until {_seconds(end)}"
        return f"{what} at {_seconds(start)}"
    if end - start >= 0.5:
        return f"{kind} from {_seconds(start)} to {_seconds(end)}"
    return f"{kind} at {_seconds(start)}"


def _subject(strategy) -> str:
    strategy = str(strategy or "")
    if strategy in ("", "None"):
        return "Result"
    if strategy == "cache-aside":
        return "Without protection (plain cache-aside)"
    if strategy.startswith("cache-aside+"):
        protections = strategy.removeprefix("cache-aside+").split("+")
        named = ["the lock" if p == "lock" else "leases" if p == "lease" else p for p in protections]
        return "With " + " and ".join(named)
    return f"With {strategy}"


def _number(value) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _count(value) -> str:
    return f"{value:,.0f}"


def _ms(value: float) -> str:
    return f"{value / 1000:.1f} s" if value >= 1000 else f"{value:.0f} ms"


def _pair_ms(before: float, during: float) -> str:
    if during >= 1000 and before >= 100:  # one unit for both
        return f"{before / 1000:.1f} → {during / 1000:.1f} s"
    return f"{_ms(before)} → {_ms(during)}"


def _figures(analysis: dict) -> tuple[list[str], dict[str, list[str]]]:
    headline = analysis.get("headline") or {}
    figures: list[str] = []
    bad: dict[str, list[str]] = {"red": [], "amber": []}
    get = lambda name: _number(headline.get(name))  # noqa: E731 - tiny accessor

    loads, attempts = get("db_loads_per_expiry"), get("db_load_attempts_per_expiry")
    if loads is not None:
        truth = _ground_truth(analysis)
        if attempts is not None and attempts > 1.2 * loads + 0.1:
            text = f"{attempts:.3g} DB load attempts per expiry, {loads:.3g} executed"
        else:
            text = f"{loads:.3g} DB loads per expiry"
        figures.append(text + (f" ({truth})" if truth else ""))
        herd = max(loads, attempts or 0.0)
        what = f"{herd:.3g} DB load{' attempts' if herd > loads else 's'} per expiry"
        if herd > RED_LOADS_PER_EXPIRY:
            bad["red"].append(what)
        elif herd > AMBER_LOADS_PER_EXPIRY:
            bad["amber"].append(what)
        if truth.startswith("PostgreSQL disagrees"):
            bad["amber"].append("the targets' DB count disagrees with PostgreSQL's")
    before, during = get("db_p99_ms_before_fault"), get("db_p99_ms_during_fault")
    if before is not None and during is not None:
        figures.append(f"DB p99 {_pair_ms(before, during)}")
    p99 = get("p99_ms_fault_worst_second") or get("p99_ms_during_fault")
    if p99 is not None:
        figures.append(f"clients' p99 {_ms(p99)} in the worst second")
    pool = get("pool_timeouts")
    if pool:
        figures.append(f"the pool ran dry {_count(pool)} time{'s' if pool != 1 else ''}")
        bad["amber"].append("pool timeouts")
    timeouts = get("timeouts")
    if timeouts:
        figures.append(f"{_count(timeouts)} client timeout{'s' if timeouts != 1 else ''}")
        bad["amber"].append("client timeouts")
    attempts_fault = get("attempts_per_request_during_fault")
    if attempts_fault is not None and attempts_fault > AMBER_ATTEMPTS:
        figures.append(f"{attempts_fault:.3g} attempts per request")
        bad["amber"].append("retries")
    rate, (errors, unit, source) = get("error_rate"), _failed_requests(analysis)
    if rate:
        share = f"{rate * 100:.2g} %" if rate < 0.1 else f"{rate * 100:.0f} %"
        figures.append(f"{_count(errors)} failed {unit} ({share}, {source})" if errors else f"{share} of requests failed")
        (bad["red"] if rate > RED_ERROR_RATE else bad["amber"]).append(f"{share} of requests failed")
    elif rate == 0 and not pool and not timeouts:
        figures.append("no errors")
    return figures, bad


def _failed_requests(analysis: dict) -> tuple[float | None, str, str]:
    """The failures beside the error rate, from the same source when there is one: Locust counts every
    attempt (a retry is a request to it); the histories only the sampled keys."""
    errors = analysis.get("errors") or {}
    locust = errors.get("locust_failures_by_kind") or {}
    if locust:
        return float(sum(locust.values())), "attempts", "Locust's count"
    count = _number((analysis.get("headline") or {}).get("errors"))
    return count, "requests", "the histories' count of the sampled keys"


def _ground_truth(analysis: dict) -> str:
    headline = analysis.get("headline") or {}
    truth = headline.get("db_ground_truth")
    if isinstance(truth, dict) and truth.get("agrees") is not None:
        if truth["agrees"]:
            return "PostgreSQL confirms"
        return (f"PostgreSQL disagrees: it counted {_count(truth.get('pg_count') or 0)}, the targets "
                f"{_count(truth.get('targets_count') or 0)}; PostgreSQL's figure is used")
    legacy = (analysis.get("db") or {}).get("ground_truth") or {}
    if legacy.get("agree") is True:
        return "PostgreSQL confirms"
    if legacy.get("agree") is False:
        return (f"PostgreSQL disagrees: it counted {_count(legacy.get('pg_transactions') or 0)} transactions, "
                f"the targets {_count(legacy.get('target_queries') or 0)} queries")
    return ""


def _recovery(headline: dict) -> tuple[str, bool] | None:
    """One recovery: headline `recovery` when present, else the clients' view."""
    recovery = headline.get("recovery")
    if isinstance(recovery, dict) and recovery.get("recovered") is not None:
        if recovery["recovered"]:
            return (_healthy_again(_number(recovery.get("time_s"))), True)
        return (recovery_text(recovery), False)  # the words every other place shows
    recovered, seconds = headline.get("recovered_on_its_own"), _number(headline.get("time_to_recover_s"))
    if recovered is True:
        return (_healthy_again(seconds), True)
    if recovered is False:
        return ("not recovered before the load ended", False)
    if headline.get("p99_ms_during_fault") is not None:  # a fault, but too little load after it to judge
        return ("recovery not judged (under 3 s of load after the fault)", True)
    return None


def _healthy_again(seconds: float | None) -> str:
    if seconds is None:
        return "recovered on its own"
    return "healthy again within 0.1 s" if seconds < 0.1 else f"healthy again {seconds:.1f} s after"


def _unhealthy_baseline(baseline: dict) -> str:
    broken = []
    names = {"p99_ms": "p99", "error_rate": "error rate", "pool_timeouts": "pool timeouts",
             "db_slot_utilisation": "DB slot utilisation"}
    for name, label in names.items():
        entry = baseline.get(name)
        if not isinstance(entry, dict) or not entry.get("broke"):
            continue
        value, limit = _number(entry.get("value")), _number(entry.get("limit"))
        broken.append(f"{label} {_figure(name, value)} (limit {_figure(name, limit)})")
    detail = ": " + ", ".join(broken) if broken else ""
    return (f"Before any fault the system was already unhealthy{detail}; the figures below are not the "
            "fault's alone. Lower --rate, use a longer --ttl or more --db-capacity, or find the knee with "
            "`cachestorm capacity`.")


def _figure(name: str, value: float | None) -> str:
    if value is None:
        return "–"
    if name == "p99_ms":
        return _ms(value)
    if name in ("error_rate", "db_slot_utilisation"):
        return f"{value * 100:.3g} %"
    return _count(value)


def _promises(analysis: dict, red: list[str]) -> list[str]:
    headline = analysis.get("headline") or {}
    sentences = []
    over = _number(headline.get("stale_reads_over_bound"))
    bound = ((analysis.get("consistency") or {}).get("staleness_bound_s"))
    if over:
        sentences.append(f"{_count(over)} {'read was' if over == 1 else 'reads were'} staler than the promised "
                         f"{_seconds(float(bound)) if bound is not None else 'bound'}.")
        red.append("stale reads beyond the bound")
    lost = _number(headline.get("lost_writes"))
    if lost:
        sentences.append(f"{_count(lost)} acknowledged write{' was' if lost == 1 else 's were'} lost.")
        red.append("lost writes")
    for name, text in (("counter_lost", "counters lost increments"), ("counter_duplicated",
                       "counters duplicated increments"), ("revoked_granted", "checks were granted after a revoke")):
        value = _number(headline.get(name))
        if value:
            sentences.append(f"{_count(value)} {text}.")
            red.append(text)
    return sentences
