"""Synthetic histories for the checker benchmark: plausible traffic, a few planted stale reads."""

from __future__ import annotations

import random
from pathlib import Path

from reports.history import COLUMNS, MAGIC


def write_synthetic_histories(directory: str | Path, operations: int, *, workers: int = 4, keys: int = 10_000,
                              users: int = 200, stale_every: int = 1000, seed: int = 7) -> list[Path]:
    """Write `operations` operations over `workers` history files; returns their paths.

    Each worker owns its own keys (so versions stay coherent without coordination):
    80% reads, 15% writes, 5% increments; one read in `stale_every` returns the
    previous version after a newer one was acknowledged.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    per_worker = operations // workers
    paths = []
    for worker in range(workers):
        count = per_worker + (operations - per_worker * workers if worker == workers - 1 else 0)
        path = directory / f"w{worker}-{1000 + worker}.tsv"
        _write_worker(path, worker, count, keys // workers or 1, users, stale_every, rng)
        paths.append(path)
    return paths


def _write_worker(path: Path, worker: int, count: int, keys: int, users: int, stale_every: int,
                  rng: random.Random) -> None:
    version = [1] * keys
    now = 1_000_000_000_000 + worker
    wall = 1_700_000_000.0
    lines = [MAGIC, "\t".join(COLUMNS)]
    choices = rng.choices(range(keys), weights=[1.0 / (k + 1) for k in range(keys)], k=count)
    draws = [rng.random() for _ in range(count)]
    for n in range(count):
        k = choices[n]
        key = f"{worker}-{k + 1}"
        start = now
        end = start + 200_000 + (n % 7) * 50_000
        now = end + 10_000
        user = f"u{n % users}"
        rid = f"{worker}-{n}"
        draw = draws[n]
        if draw < 0.80:
            served = version[k] - 1 if (n % stale_every == 0 and version[k] > 1) else version[k]
            lines.append(f"{key}\tread\t{start}\t{end}\t{wall + n * 1e-4:.4f}\t200\t{served}\thit\t{user}\t{rid}\t")
        elif draw < 0.95:
            version[k] += 1
            lines.append(f"{key}\twrite\t{start}\t{end}\t{wall + n * 1e-4:.4f}\t200\t{version[k]}\t\t{user}\t{rid}\t")
        else:
            lines.append(f"c{key}\tincr\t{start}\t{end}\t{wall + n * 1e-4:.4f}\t200\t\t\t{user}\t{rid}\t1")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
