"""Warnings a report shows on top: data a run meant to record and could not, so numbers that look
complete are not (e.g. PostgreSQL's own counters under docker-compose without pg_stat_statements)."""

from __future__ import annotations


def pg_sampling(records: list[dict]) -> dict:
    """How the 1 s PostgreSQL samples (pg_stats.jsonl) went: {samples, failed, first_error}."""
    failed = [record for record in records if "error" in record]
    first_error = str(failed[0]["error"])[:200] if failed else None
    return {"samples": len(records), "failed": len(failed), "first_error": first_error}


def run_warnings(pg_records: list[dict]) -> list[str]:
    warnings = []
    sampling = pg_sampling(pg_records)
    if sampling["failed"]:
        consequence = ("PostgreSQL's own counters are missing: DB load comes from the targets' counts only"
                       if sampling["failed"] == sampling["samples"] else "its counters have gaps")
        warnings.append(f"PostgreSQL sampling failed in {sampling['failed']} of {sampling['samples']} samples "
                        f"({sampling['first_error']}); {consequence}")
    return warnings
