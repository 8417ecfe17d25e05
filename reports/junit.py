"""JUnit XML for CI: one test case per SLO and run, from a gate result."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree as ET

from cachestorm.reports.gate import GateResult


def to_junit_xml(gate: GateResult, suite: str = "cachestorm gate") -> str:
    failures = sum(1 for r in gate.results if not r.passed)
    skipped = sum(1 for r in gate.results if r.skipped)
    root = ET.Element("testsuites", name=suite, tests=str(len(gate.results)), failures=str(failures))
    suite_element = ET.SubElement(root, "testsuite", name=suite, tests=str(len(gate.results)),
                                  failures=str(failures), errors="0", skipped=str(skipped))
    for result in gate.results:
        case = ET.SubElement(suite_element, "testcase", classname=result.run or "no matching run",
                             name=f"{result.name} [{result.metric} {result.bound} {result.limit:g}]"
                             if result.limit is not None else result.name, time="0")
        if result.skipped:
            ET.SubElement(case, "skipped", message=result.message)
        elif not result.passed:
            failure = ET.SubElement(case, "failure", message=result.message, type="SLOViolation")
            failure.text = (f"value={result.value} limit={result.limit} bound={result.bound} "
                            f"excess={result.excess} run_dir={result.run_dir}")
        else:
            ET.SubElement(case, "system-out").text = result.message
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(gate: GateResult, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(to_junit_xml(gate), encoding="utf-8")
    return path
