"""`cachestorm bench checker`: time reading + checking a synthetic history of N operations."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from cachestorm.reports.checker import check_history
from cachestorm.reports.history import read_histories
from cachestorm.reports.synthetic import write_synthetic_histories

TARGET_S_PER_MILLION = 10.0


def main(operations: int = 1_000_000) -> dict:
    """Generate, read and check `operations` operations; print and return the timings."""
    with tempfile.TemporaryDirectory(prefix="cachestorm-bench-") as tmp:
        paths = write_synthetic_histories(Path(tmp) / "histories", operations)
        began = time.perf_counter()
        history = read_histories(paths)
        read_s = time.perf_counter() - began
        began = time.perf_counter()
        result = check_history(history, staleness_bound_s=1.0)
        check_s = time.perf_counter() - began
    total = read_s + check_s
    limit = TARGET_S_PER_MILLION * operations / 1_000_000
    stale = result["findings"]["stale_reads"]["count"]
    print(f"checker: {operations:,} operations: read {read_s:.2f} s + check {check_s:.2f} s = {total:.2f} s "
          f"({operations / total:,.0f} ops/s; target < {limit:.1f} s: {'ok' if total < limit else 'TOO SLOW'}); "
          f"{stale} stale reads found")
    return {"operations": operations, "read_s": read_s, "check_s": check_s, "total_s": total,
            "stale_reads": stale, "within_target": total < limit}


if __name__ == "__main__":
    main()
