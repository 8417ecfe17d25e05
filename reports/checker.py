"""Consistency checker over operation histories (Jepsen style, versions instead of values).

Every anomaly is decided from the history alone, plus the final truth the
conductor read from PostgreSQL (the run folder's truth) for lost writes and counters:

- stale read: returned version r although a write of a version > r had been
  acknowledged before the read started; its staleness is read start minus the
  earliest acknowledgement of any version > r (how long r had been superseded).
- read-your-writes: user U read K and got less than U's own newest write to K
  acknowledged before the read started.
- lost write: acknowledged, but its version is above PostgreSQL's final version.
- counters: acknowledged increments vs PostgreSQL's final value; timeouts and
  connection errors are indeterminate (may or may not have applied).
- revoked-but-granted: a permission check that started more than the declared
  bound after an acknowledged revoke and still said granted, with no grant that
  could have come after the revoke.

Per key, writes are sorted by version with a suffix minimum of their ack times,
so each read is one bisect: O(n log n) over flat columns, no per-op objects.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import defaultdict
from pathlib import Path

from cachestorm.reports.history import (
    NO_TIME,
    NO_VERSION,
    READ_OPS,
    WRITE_OPS,
    History,
    gc_paused,
    read_run_history,
    status_class,
)

from cachestorm.core.domains import DOMAINS
from cachestorm.core.runfolder import RunFolder, Truth

DEFAULT_WITHIN_S = (0.0, 1.0, 5.0, 10.0, 60.0)
MAX_EXAMPLES = 5
_INF = float("inf")
_PERMISSION_OPS = frozenset({"check", "grant", "revoke"})


def check_run(run_dir: str | Path, within_s: tuple[float, ...] = DEFAULT_WITHIN_S,
              staleness_bound_s: float | None = None) -> dict:
    """Read a run folder's histories, truth and run record, and check them."""
    folder = RunFolder(run_dir)
    run = folder.meta()
    truth = folder.truth()
    if staleness_bound_s is None:
        staleness_bound_s = declared_bound(run, truth)
    settings = run.get("settings") or {}
    return check_history(read_run_history(folder.path), truth, staleness_bound_s=staleness_bound_s,
                         within_s=within_s, t0_ns=run.get("t0_monotonic_ns"),
                         domain=settings.get("domain") or run.get("domain"),
                         revoke_bound_s=truth.declared_revoke_bound_s if truth else None)


def check_history(history: History, truth: Truth | None = None, *, staleness_bound_s: float | None = None,
                  within_s: tuple[float, ...] = DEFAULT_WITHIN_S, t0_ns: int | None = None,
                  domain: str | None = None, owner_is_key: bool | None = None,
                  max_examples: int = MAX_EXAMPLES, revoke_bound_s: float | None = None) -> dict:
    """All findings as a JSON-serialisable dict (schema in docs/report-schema.md, `consistency`).

    `owner_is_key`: a write without a user counts as written by the user whose id is the key
    (profiles: the owner edits their profile and reads it with X-User-Id = id). Default: on for
    a domain whose spec says so (profiles). `revoke_bound_s`: the permissions domain's own bound (the target's, one
    truth); without it granted-after-revoke uses the staleness bound.
    """
    spec = DOMAINS.get(domain or "")
    if owner_is_key is None:
        owner_is_key = bool(spec and spec.owner_is_key)
    with gc_paused():
        return _check(history, truth, staleness_bound_s, within_s, t0_ns, domain, owner_is_key, max_examples,
                      staleness_bound_s if revoke_bound_s is None else revoke_bound_s)


def _check(history: History, truth: Truth | None, staleness_bound_s: float | None, within_s, t0_ns: int | None,
           domain: str | None, owner_is_key: bool, max_examples: int, revoke_bound_s: float | None) -> dict:
    index = _Index(history, owner_is_key)
    example = _Examples(history, t0_ns, max_examples)
    stale = _stale_reads(history, index, staleness_bound_s, within_s, example)
    findings = {
        "stale_reads": stale.pop("finding"),
        "consistency_nines": stale.pop("nines"),
        "read_your_writes": _read_your_writes(history, index, example),
        "lost_writes": _lost_writes(history, index, truth, domain, example),
        "counters": _counters(history, index, truth, domain, example),
        "revoked_granted": _revoked_granted(history, index, revoke_bound_s, example),
    }
    warnings = []
    spec = DOMAINS.get(domain or "")
    if spec and spec.per_field and index.permission_ops and not any(
            ":" in history.key[i] for i in index.permission_ops[:1000]):
        warnings.append("permission history keys have no permission name (expected '<user>:<perm>', as in "
                        f"{RunFolder.TRUTH}): different permissions of one user share a key, so stale reads and "
                        "granted-after-revoke may be false alarms")
    promise = _promise(findings["stale_reads"], staleness_bound_s)
    # broken promises only: a stale read within the declared bound is what the strategy promised, and
    # read-your-writes is promised only by a strategy that is fresh after a write (bound 0)
    anomalies = promise["beyond"] + findings["lost_writes"]["count"] + findings["revoked_granted"]["count"]
    anomalies += findings["counters"]["lost"]["count"] + findings["counters"]["duplicated"]["count"]
    if not staleness_bound_s:
        anomalies += findings["read_your_writes"]["count"]
    return {
        "operations": len(history),
        "reads_checked": len(index.reads),
        "writes_acknowledged": index.acked_writes,
        "staleness_bound_s": staleness_bound_s,
        "truth_available": truth is not None,
        "owner_is_key": owner_is_key,
        "anomalies": anomalies,
        "promise": promise,
        "warnings": warnings,
        "findings": findings,
    }


class _Index:
    """Positions of the operations each check needs (list comprehensions: several fast passes)."""

    def __init__(self, h: History, owner_is_key: bool = False):
        self.classes = {status: status_class(status) for status in set(h.status)}
        ok = [self.classes[status] == "ok" for status in h.status]
        versions = h.version
        self.reads = [i for i, (op, good, version) in enumerate(zip(h.op, ok, versions, strict=True))
                      if good and version != NO_VERSION and op in READ_OPS]
        self.acked_write_positions = [
            i for i, (op, good, version) in enumerate(zip(h.op, ok, versions, strict=True))
            if good and version != NO_VERSION and op in WRITE_OPS]
        self.incrs = [i for i, op in enumerate(h.op) if op == "incr"]
        self.permission_ops = [i for i, op in enumerate(h.op) if op in _PERMISSION_OPS]
        self.acked_writes = len(self.acked_write_positions)
        self.writes_by_key: dict[str, list[tuple[int, int]]] = defaultdict(list)  # (version, end_ns)
        # key -> user -> [(end_ns, version)]
        self.own_writes: dict[str, dict[str, list[tuple[int, int]]]] = defaultdict(lambda: defaultdict(list))
        keys, ends, users = h.key, h.end_ns, h.user
        for i in self.acked_write_positions:
            key, end, version = keys[i], ends[i], versions[i]
            self.writes_by_key[key].append((version, end))
            writer = users[i] or (key if owner_is_key else "")
            if writer:
                self.own_writes[key][writer].append((end, version))


class _Examples:
    def __init__(self, history: History, t0_ns: int | None, limit: int):
        self.history, self.t0_ns, self.limit = history, t0_ns, limit

    def __call__(self, i: int, **context) -> dict:
        record = self.history.operation(i, self.t0_ns)
        record.update(context)
        return record


def _stale_reads(h: History, index: _Index, bound_s: float | None, within_s, example) -> dict:
    # per key: versions ascending, and the earliest ack among versions >= position
    superseded: dict[str, tuple[list[int], list[int]]] = {}
    for key, writes in index.writes_by_key.items():
        writes.sort()
        versions = [v for v, _ in writes]
        earliest = [0] * len(writes)
        running = _INF
        for pos in range(len(writes) - 1, -1, -1):
            end = writes[pos][1]
            if end < running:
                running = end
            earliest[pos] = running
        superseded[key] = (versions, earliest)

    stale: list[tuple[int, int]] = []  # (staleness_ns, position)
    keys, starts, versions_col = h.key, h.start_ns, h.version
    for i in index.reads:
        found = superseded.get(keys[i])
        if found is None:
            continue
        versions, earliest = found
        pos = bisect_right(versions, versions_col[i])
        if pos < len(versions):
            acked = earliest[pos]
            start = starts[i]
            if acked < start:
                stale.append((start - acked, i))

    total = len(index.reads)
    stale.sort()
    ages = [ns / 1e9 for ns, _ in stale]
    over_bound = None if bound_s is None else len(ages) - bisect_right(ages, bound_s)
    worst = [example(i, staleness_s=round(ns / 1e9, 6), newest_acked_version=_newest_before(
        superseded[h.key[i]], starts[i])) for ns, i in reversed(stale[-example.limit:])]
    finding = {
        "count": len(stale),
        "reads": total,
        "fraction": (len(stale) / total) if total else None,
        "bound_s": bound_s,
        "over_bound": over_bound,
        "staleness_s": {"p50": _percentile(ages, 50), "p99": _percentile(ages, 99),
                        "max": ages[-1] if ages else None},
        "examples": worst,
        "series": _stale_series(stale, starts, example.t0_ns),
    }
    nines = [_nines_row(m, total, len(ages) - bisect_right(ages, m)) for m in within_s]
    return {"finding": finding, "nines": nines}


def _promise(stale: dict, bound_s: float | None) -> dict:
    """The strategy's staleness promise and whether it held, as a report leads with it."""
    reads = stale["reads"]
    beyond = stale["count"] if bound_s is None else stale["over_bound"]
    fraction = (reads - beyond) / reads if reads else None
    what = ("no declared staleness bound (every stale read counts)" if bound_s is None else
            "the read-after-write promise" if bound_s == 0 else f"the {bound_s:g} s staleness promise")
    text = (f"no reads checked against {what}" if not reads else
            f"{fraction * 100:.2f}% of {reads:,} reads within {what}; {beyond:,} beyond it")
    return {"bound_s": bound_s, "reads": reads, "within": reads - beyond, "beyond": beyond,
            "fraction_within": fraction, "held": beyond == 0, "text": text}


def _stale_series(stale: list[tuple[int, int]], starts, t0_ns: int | None) -> list[dict]:
    """Per second of read start: how many stale reads and the worst staleness (for charts)."""
    if not stale:
        return []
    t0 = t0_ns if t0_ns is not None else min(starts[i] for _, i in stale)
    seconds: dict[int, list[float]] = {}
    for ns, i in stale:
        row = seconds.setdefault((starts[i] - t0) // 1_000_000_000, [0, 0.0])
        row[0] += 1
        row[1] = max(row[1], ns / 1e9)
    return [{"t": int(t), "stale_reads": n, "max_staleness_s": round(m, 6)} for t, (n, m) in sorted(seconds.items())]


def _newest_before(found: tuple[list[int], list[int]], start: int) -> int | None:
    versions, earliest = found
    # the highest version whose suffix-earliest ack precedes the read: earliest is non-decreasing
    pos = bisect_left(earliest, start)
    return versions[pos - 1] if pos else None


def _nines_row(within: float, total: int, inconsistent: int) -> dict:
    """Polaris style: the share of reads consistent within `within` seconds, as nines."""
    if total == 0:
        return {"within_s": within, "consistent": 0, "total": 0, "fraction": None, "nines": None,
                "all_consistent": True, "display": "no reads"}
    consistent = total - inconsistent
    fraction = consistent / total
    if inconsistent == 0:
        # infinitely many nines; say how many the sample size can show at most
        return {"within_s": within, "consistent": consistent, "total": total, "fraction": 1.0,
                "nines": None, "all_consistent": True, "nines_lower_bound": round(math.log10(total), 3),
                "display": f"all {total:,} reads (≥ {math.log10(total):.2f} nines)"}
    nines = -math.log10(1.0 - fraction)
    return {"within_s": within, "consistent": consistent, "total": total, "fraction": fraction,
            "nines": round(nines, 3), "all_consistent": False,
            "display": f"{fraction * 100:.3g}% of {total:,} reads ({nines:.2f} nines)"}


def _read_your_writes(h: History, index: _Index, example) -> dict:
    prepared: dict[str, dict[str, tuple[list[int], list[int]]]] = {}
    for key, by_user in index.own_writes.items():
        prepared[key] = {}
        for user, writes in by_user.items():
            writes.sort()
            best, newest = [], NO_VERSION
            for _, version in writes:
                newest = max(newest, version)
                best.append(newest)
            prepared[key][user] = ([end for end, _ in writes], best)
    violations = []
    checked = 0
    users, keys, starts, versions = h.user, h.key, h.start_ns, h.version
    for i in index.reads:
        by_user = prepared.get(keys[i])
        if by_user is None:
            continue
        found = by_user.get(users[i])
        if found is None:
            continue
        ends, best = found
        pos = bisect_left(ends, starts[i])  # own writes acknowledged strictly before the read started
        if pos == 0:
            continue
        checked += 1
        if versions[i] < best[pos - 1]:
            violations.append((i, best[pos - 1]))
    return {"count": len(violations), "reads_checked": checked,
            "examples": [example(i, own_acked_version=v) for i, v in violations[:example.limit]]}


def _truth_for(table: dict[str, int], key: str, domain: str | None) -> int | None:
    """Look a history key up in truth, tolerating a missing or extra `<domain>:` prefix."""
    if key in table:
        return table[key]
    if domain and f"{domain}:{key}" in table:
        return table[f"{domain}:{key}"]
    if ":" in key:
        return table.get(key.split(":", 1)[1])
    return None


def _lost_writes(h: History, index: _Index, truth: Truth | None, domain: str | None, example) -> dict:
    if truth is None or not truth.versions:
        return {"count": 0, "checked": False, "keys": 0, "examples": [],
                "note": f"no {RunFolder.TRUTH} versions: lost writes not checked"}
    lost = []
    keys, ops, versions = h.key, h.op, h.version
    for i in index.acked_write_positions:
        if ops[i] in ("incr", "delete"):
            continue
        final = _truth_for(truth.versions, keys[i], domain)
        if final is not None and versions[i] > final:
            lost.append((i, final))
    return {"count": len(lost), "checked": True, "keys": len({keys[i] for i, _ in lost}),
            "examples": [example(i, final_version=final) for i, final in lost[:example.limit]]}


def _counters(h: History, index: _Index, truth: Truth | None, domain: str | None, example) -> dict:
    # group attempts by request id: a retried increment is one logical increment
    acked: dict[str, int] = defaultdict(int)
    acked_ops: dict[str, list[tuple[int, int]]] = defaultdict(list)  # key -> [(ack time, by)] per increment
    indeterminate: dict[str, int] = defaultdict(int)
    sample: dict[str, int] = {}
    logical: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i in index.incrs:
        request_id = h.request_id[i] or f"#{i}"
        logical[(h.key[i], request_id)].append(i)
    for (key, _), attempts in logical.items():
        classes = [index.classes[h.status[i]] for i in attempts]
        sample.setdefault(key, attempts[0])
        if "ok" in classes:
            ok = attempts[classes.index("ok")]
            acked[key] += h.value[ok]
            acked_ops[key].append((h.end_ns[ok], h.value[ok]))
        elif "indeterminate" in classes:
            indeterminate[key] += h.value[attempts[classes.index("indeterminate")]]
    empty = {"count": 0, "amount": 0, "examples": []}
    result = {"checked": False, "keys": len(sample), "acked_total": sum(acked.values()),
              "indeterminate_total": sum(indeterminate.values()), "db_total": None,
              "lost": dict(empty), "duplicated": dict(empty), "indeterminate_keys": 0}
    if truth is None or not truth.counters:
        result["note"] = f"no {RunFolder.TRUTH} counters: counters not reconciled"
        return result
    lost, duplicated, unsure = [], [], 0
    db_total = 0
    # only keys the history saw can be reconciled: the others were not sampled, not "never incremented"
    for key in sorted(set(h.key)):
        db = _truth_for(truth.counters, key, domain)
        if db is None:
            continue
        db -= _truth_for(truth.counters_start, key, domain) or 0  # what this run added
        db_total += db
        ack, maybe = acked.get(key, 0), indeterminate.get(key, 0)
        row = {"key": key, "acked": ack, "indeterminate": maybe, "db": db}
        if db < ack:
            lost.append({**row, "difference": ack - db, "increments": _lost_increments(acked_ops[key], db)})
        elif db > ack + maybe:
            duplicated.append({**row, "difference": db - ack - maybe})
        elif db != ack:
            unsure += 1
    for rows in (lost, duplicated):
        for row in rows[:example.limit]:
            if row["key"] in sample:
                row["operation"] = example(sample[row["key"]])
    result.update(
        checked=True, db_total=db_total, indeterminate_keys=unsure,
        lost={"count": len(lost), "amount": sum(r["difference"] for r in lost),
              "increments": sum(r["increments"] for r in lost), "examples": lost[:example.limit]},
        duplicated={"count": len(duplicated), "amount": sum(r["difference"] for r in duplicated),
                    "examples": duplicated[:example.limit]},
    )
    return result


def _lost_increments(acknowledged: list[tuple[int, int]], db: int) -> int:
    """How many acknowledged increments of one counter PostgreSQL does not hold: taken in the order they
    were acknowledged, those past the point where their running sum reaches the database's value (a
    write-behind loses the tail it had not flushed). Counts operations, not amounts (each adds 1..n)."""
    total = 0
    for n, (_end, by) in enumerate(sorted(acknowledged)):
        total += by
        if total > db:
            return len(acknowledged) - n
    return 0


def _revoked_granted(h: History, index: _Index, bound_s: float | None, example) -> dict:
    bound_ns = int((bound_s or 0.0) * 1e9)
    revokes: dict[str, list[tuple[int, int]]] = defaultdict(list)  # (end, start), acknowledged
    grants: dict[str, list[tuple[int, float]]] = defaultdict(list)  # (start, end or inf), maybe applied
    checks: list[int] = []
    for i in index.permission_ops:
        op, cls, key = h.op[i], index.classes[h.status[i]], h.key[i]
        if op == "revoke" and cls == "ok":
            revokes[key].append((h.end_ns[i], h.start_ns[i]))
        elif op == "grant" and cls != "failed":
            end = h.end_ns[i]
            grants[key].append((h.start_ns[i], _INF if cls != "ok" or end == NO_TIME else end))
        elif op == "check" and cls == "ok" and h.value[i] == 1:
            checks.append(i)
    prepared_revokes = {}
    for key, rows in revokes.items():
        rows.sort()
        latest_start, running = [], -1
        for _, start in rows:
            running = max(running, start)
            latest_start.append(running)
        prepared_revokes[key] = ([end for end, _ in rows], latest_start)
    prepared_grants = {}
    for key, rows in grants.items():
        rows.sort()
        latest_end, running = [], -_INF
        for _, end in rows:
            running = max(running, end)
            latest_end.append(running)
        prepared_grants[key] = ([start for start, _ in rows], latest_end)
    violations = []
    for i in checks:
        key = h.key[i]
        found = prepared_revokes.get(key)
        if found is None:
            continue
        ends, latest_start = found
        start = h.start_ns[i]
        pos = bisect_left(ends, start - bound_ns)  # revokes acknowledged more than the bound before
        if pos == 0:
            continue
        revoke_start = latest_start[pos - 1]
        revoke_end = ends[pos - 1]
        granted_later = prepared_grants.get(key)
        if granted_later is not None:
            starts, latest_end = granted_later
            check_end = h.end_ns[i] if h.end_ns[i] != NO_TIME else start
            g = bisect_left(starts, check_end)
            if g and latest_end[g - 1] > revoke_start:
                continue  # a grant may have been ordered after the revoke
        violations.append((i, (start - revoke_end) / 1e9))
    return {"count": len(violations), "bound_s": bound_s or 0.0,
            "examples": [example(i, since_revoke_s=round(s, 6)) for i, s in violations[:example.limit]]}


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def declared_bound(run: dict, truth: Truth | None) -> float | None:
    if truth is not None and truth.declared_staleness_bound_s is not None:
        return truth.declared_staleness_bound_s
    settings = run.get("settings") or {}
    value = settings.get("declared_staleness_bound_s", run.get("declared_staleness_bound_s"))
    return None if value is None else float(value)
