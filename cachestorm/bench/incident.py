"""`cachestorm bench incident`: the incident, unprotected vs protected, side by side in one run.

1. Warm-up: a 10 s run over 10,000 keys at a 150 ms recompute (no fault): the prefill's own time
   and the run's wall time. Goal: the whole run under 45 s (a warm-up through the read path took
   ~200 s: longer than the TTL, so the load began cold).
2. hot-key-expiry on its defaults (the experiment's `run:` section), cache-aside vs cache-aside+lock:
   DB loads per expiry, peak DB query latency, pool timeouts, client timeouts and failed attempts in
   the fault window, recovery - and the ratios unprotected / protected.
3. synchronized-expiry on its defaults, cache-aside vs cache-aside+jitter: the second wave's DB peak.
4. (--retry-storm) retry-storm with naive:3 vs budget:0.1: recovered on its own, time to recover,
   attempts per request after the trigger.
All runs share one stack; run folders go to --out.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from cachestorm.conductor import RunSettings, run
from cachestorm.stack import StackSettings, start_stack, stop_stack

WARM_KEYS, WARM_RECOMPUTE_MS, WARM_DURATION_S, WARM_GOAL_S = 10_000, 150.0, 10.0, 45.0


def _headline(run_dir: Path) -> tuple[dict, dict]:
    from cachestorm.reports.analysis import analyze_run

    analysis = analyze_run(run_dir)
    return analysis["headline"], analysis.get("incident") or {}


def _failed_in_window(incident: dict) -> float | None:
    window = incident.get("window") or {}
    parts = [window.get(k) for k in ("timeouts_during_fault", "conn_errors_during_fault",
                                     "server_errors_during_fault")]
    return None if any(p is None for p in parts) else float(sum(parts))


def _ratio(a, b) -> str:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or isinstance(a, bool):
        return "n/a"
    if b == 0:
        return "inf" if a > 0 else "1.00x (both 0)"
    return f"{a / b:.2f}x"


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:,.1f}" if isinstance(value, float) else str(value)


def _row(name: str, a, b, ratio: bool = True) -> str:
    return f"  {name:<36} {_fmt(a):>14} {_fmt(b):>14} {(_ratio(a, b) if ratio else ''):>14}"


def main(out: str = "runs/bench-incident", retry_storm: bool = True) -> None:
    out_dir = Path(out).resolve() / time.strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True)
    stack = start_stack(StackSettings())
    base = RunSettings(out=str(out_dir), render=False)
    try:
        started = time.monotonic()
        warm_dir = run(dataclasses.replace(base, keys=WARM_KEYS, rows=WARM_KEYS, recompute_ms=WARM_RECOMPUTE_MS,
                                           duration_s=WARM_DURATION_S, rate=100.0, label="warm-up"), stack=stack)
        warm_wall = time.monotonic() - started
        from cachestorm.core.runfolder import RunFolder

        warm_step = next(r for r in RunFolder(warm_dir).journal_records() if r["what"] == "warm cache")
        runs = {}
        for strategy in ("cache-aside", "cache-aside+lock"):
            runs[strategy] = _headline(run(dataclasses.replace(
                base, strategy=strategy, experiment="hot-key-expiry", label=strategy,
                explicit=frozenset({"strategy"})), stack=stack))
        waves = {}
        for strategy in ("cache-aside", "cache-aside+jitter"):
            waves[strategy] = _headline(run(dataclasses.replace(
                base, strategy=strategy, experiment="synchronized-expiry", label=f"sync-{strategy}",
                explicit=frozenset({"strategy"})), stack=stack))
        storms = {}
        if retry_storm:
            for retry in ("naive:3", "budget:0.1"):
                storms[retry] = _headline(run(dataclasses.replace(
                    base, experiment="retry-storm", retry=retry, label=f"retry-storm-{retry.replace(':', '-')}",
                    explicit=frozenset({"retry"})), stack=stack))
    finally:
        stop_stack(stack)

    print(f"warm-up: {WARM_KEYS:,} keys prefilled in {warm_step['details'].get('seconds', 'n/a')} s "
          f"(the journal's step: {warm_step['t_end'] - warm_step['t_start']:.1f} s); a {WARM_DURATION_S:g} s run at "
          f"{WARM_RECOMPUTE_MS:g} ms recompute took {warm_wall:.1f} s of wall time "
          f"(goal < {WARM_GOAL_S:g} s: {'met' if warm_wall < WARM_GOAL_S else 'NOT met'})")
    (a, ia), (b, ib) = runs["cache-aside"], runs["cache-aside+lock"]
    print("\nhot-key-expiry on its defaults          cache-aside  cache-aside+lock  unprotected/protected")
    print(_row("DB loads per expiry", a.get("db_loads_per_expiry"), b.get("db_loads_per_expiry")))
    print(_row("DB query p99 during fault (ms)", a.get("db_p99_ms_during_fault"), b.get("db_p99_ms_during_fault")))
    print(_row("DB query p99 before fault (ms)", a.get("db_p99_ms_before_fault"), b.get("db_p99_ms_before_fault")))
    print(_row("peak DB query p99 (ms)", (ia.get("db_latency") or {}).get("peak_p99_ms"),
               (ib.get("db_latency") or {}).get("peak_p99_ms")))
    print(_row("pool timeouts in window", a.get("pool_timeouts_during_fault"), b.get("pool_timeouts_during_fault")))
    print(_row("client timeouts in window", a.get("timeouts_during_fault"), b.get("timeouts_during_fault")))
    print(_row("failed attempts in window", _failed_in_window(ia), _failed_in_window(ib)))
    print(_row("attempts per request in window", a.get("attempts_per_request_during_fault"),
               b.get("attempts_per_request_during_fault")))
    print(_row("pool timeouts + timeouts (run)", _sum(a, "pool_timeouts", "timeouts"),
               _sum(b, "pool_timeouts", "timeouts")))
    print(_row("errors (run)", a.get("errors"), b.get("errors")))
    print(_row("time to recover (s)", a.get("time_to_recover_s"), b.get("time_to_recover_s")))
    print(_row("recovered on its own", a.get("recovered_on_its_own"), b.get("recovered_on_its_own"), ratio=False))
    (p, ip), (j, ij) = waves["cache-aside"], waves["cache-aside+jitter"]
    print("\nsynchronized-expiry on its defaults     cache-aside  cache-aside+jitter  unjittered/jittered")
    print(_row("DB peak, second wave (reads/s)", p.get("db_second_wave_peak_reads_per_s"),
               j.get("db_second_wave_peak_reads_per_s")))
    print(_row("DB peak, first wave (reads/s)", _first_wave(ip), _first_wave(ij)))
    if storms:
        (n, _), (g, _) = storms["naive:3"], storms["budget:0.1"]
        print("\nretry-storm (metastability)                naive:3     budget:0.1")
        print(_row("recovered on its own", n.get("recovered_on_its_own"), g.get("recovered_on_its_own"), False))
        print(_row("time to recover (s)", n.get("time_to_recover_s"), g.get("time_to_recover_s"), False))
        print(_row("attempts per request (run)", n.get("attempts_per_request"), g.get("attempts_per_request")))
        print(_row("client timeouts (run)", n.get("timeouts"), g.get("timeouts")))
    print(f"\nrun folders: {out_dir}")


def _first_wave(incident: dict) -> float | None:
    return max((w["first_wave_peak_reads_per_s"] for w in incident.get("expiry_waves") or []
                if w["first_wave_peak_reads_per_s"] is not None), default=None)


def _sum(headline: dict, *names: str) -> float | None:
    values = [headline.get(n) for n in names]
    return None if any(v is None for v in values) else float(sum(values))
