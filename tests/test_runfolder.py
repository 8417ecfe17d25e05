"""RunFolder: the names its writers use are the ones its readers find; one rule for damaged JSON lines."""

from __future__ import annotations

import json

import pytest
from cachestorm.traffic.recording import HistoryWriter, LatencyRecorder, merge_run

from cachestorm.core.errors import CachestormError
from cachestorm.core.runfolder import RunFolder, Truth

RECORD = {"t": 1.0, "wall": 1_700_000_001.0, "what": "x"}


def _latency_record(worker: str = "w0-1") -> dict:
    from hdrh.histogram import HdrHistogram

    histogram = HdrHistogram(1, 60_000_000, 3)
    histogram.record_value(1000, 3)
    return {"t": 1.0, "wall": 1_700_000_001, "interval_s": 1.0, "worker": worker, "kind": "all",
            "hist": histogram.encode().decode("ascii")}


# every JSON-lines file of a run folder: where it is, one good record, how many records its reader got
JSONL_READERS = {
    "journal": (lambda f: f.journal_path, RECORD, lambda f: len(f.journal_records())),
    "metrics": (lambda f: f.metrics_path, RECORD, lambda f: len(f.metrics())),
    "pg_stats": (lambda f: f.pg_stats_path, RECORD, lambda f: len(f.pg_stats())),
    "latency (merge)": (lambda f: f.latency_path("w0-1"), _latency_record(), lambda f: merge_run(f.path)["intervals"]),
}


@pytest.mark.parametrize("name", JSONL_READERS)
def test_torn_last_line_is_skipped_the_same_way(tmp_path, name):
    """A run killed mid-write leaves half a line at the end: the rest of the file still counts."""
    where, record, read = JSONL_READERS[name]
    folder = RunFolder(tmp_path)
    path = where(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record) + "\n" + json.dumps(record)[:9])
    assert read(folder) == 1


@pytest.mark.parametrize("name", JSONL_READERS)
def test_damaged_middle_line_is_one_clear_error(tmp_path, name):
    """Damage before the last line is not a crash's torn write: say which file and line, never skip it."""
    where, record, read = JSONL_READERS[name]
    folder = RunFolder(tmp_path)
    path = where(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record) + "\n{not json\n" + json.dumps(record) + "\n")
    with pytest.raises(CachestormError) as caught:
        read(folder)
    message = str(caught.value)
    assert str(path) in message and "line 2" in message and "\n" not in message


def test_the_writers_names_are_the_readers_names(tmp_path):
    """Each writer puts its file where RunFolder's readers look for it."""
    folder = RunFolder.new(tmp_path / "runs", "names/with space")
    assert folder.path.parent == tmp_path / "runs" and folder.path.name.endswith("-names_with_space")
    assert RunFolder.new(tmp_path / "runs", "names/with space").path != folder.path  # never an existing one

    folder.write_meta({"started_at": 1_700_000_000.0, "stack": {"postgres": "postgresql://u:secret@127.0.0.1/db"}})
    assert folder.is_run() and folder.meta()["started_at"] == 1_700_000_000.0 and folder.started_at() == 1_700_000_000.0
    assert "secret" not in folder.meta_path.read_text()  # a run folder is shared freely
    assert not list(folder.path.glob("*.tmp"))

    journal = folder.journal(1_700_000_000.0)
    with journal.step("stack", "stack"):
        pass
    assert journal.path == folder.journal_path
    assert [r["what"] for r in folder.journal_records()] == ["stack"]

    folder.write_truth({"versions": {"profiles:1": 2}, "counters": {}, "declared_staleness_bound_s": 1,
                        "counters_start": {"c": 3}})
    assert folder.truth() == Truth(versions={"profiles:1": 2}, declared_staleness_bound_s=1.0, counters_start={"c": 3})

    folder.write_step_plan(400, [0.25, 0.5, 1], 5)
    assert folder.step_plan() == (400.0, [0.25, 0.5, 1.0], 5.0)

    history = HistoryWriter(folder.path, "w0-1")
    history.close()
    again = HistoryWriter(folder.path, "w0-1")  # a second test in the same process
    again.close()
    assert folder.history_files() == sorted([history.path, again.path])

    recorder = LatencyRecorder(folder.path, "w0-1", folder.started_at())
    recorder.record("read", 1000, now_wall=1_700_000_001.2)
    recorder.close()
    assert folder.worker_latency_files() == [recorder.path] == folder.latency_files()
    merge_run(folder.path)
    assert folder.latency_files() == [folder.merged_latency_path]
    assert folder.worker_latency_files() == [recorder.path]  # the merge is not a worker

    # Locust writes <prefix>_<name>.csv for the --csv prefix the conductor gives it
    folder.locust_dir.mkdir()
    for name in ("stats", "stats_history", "failures"):
        (folder.locust_dir / f"{folder.locust_prefix.name}_{name}.csv").write_text(f"Name\n{name}\n")
        assert folder.locust_csv(name) == [{"Name": name}]


def test_a_run_without_truth_or_plan(tmp_path):
    folder = RunFolder(tmp_path)
    assert folder.truth() is None and folder.meta() == {} and folder.journal_records() == []
    with pytest.raises(CachestormError, match="not a capacity run"):
        folder.step_plan()


@pytest.mark.parametrize("name, content, says", [
    (RunFolder.META, "[]", "JSON object"),
    (RunFolder.META, '{"started', "not valid JSON"),
    (RunFolder.TRUTH, '{"versions": {"k": "x"}}', "not a valid truth file"),
    (RunFolder.TRUTH, '{"versions": [1]}', "not a valid truth file"),
    (RunFolder.STEP_PLAN, '{"max_rate": -1, "levels": [1], "hold_s": 5}', "not a step plan"),
])
def test_damaged_records_are_one_line_naming_the_file(tmp_path, name, content, says):
    folder = RunFolder(tmp_path)
    (tmp_path / name).write_text(content)
    read = {RunFolder.META: folder.meta, RunFolder.TRUTH: folder.truth, RunFolder.STEP_PLAN: folder.step_plan}[name]
    with pytest.raises(CachestormError, match=says) as caught:
        read()
    assert str(tmp_path / name) in str(caught.value) and "\n" not in str(caught.value)


def test_existing_refuses_what_is_not_a_run_folder(tmp_path):
    with pytest.raises(CachestormError, match="no such run folder"):
        RunFolder.existing(tmp_path / "missing")
    with pytest.raises(CachestormError, match=f"not a run folder \\(no {RunFolder.META}\\)"):
        RunFolder.existing(tmp_path)
    RunFolder(tmp_path).write_meta({})
    assert RunFolder.existing(tmp_path).path == tmp_path
