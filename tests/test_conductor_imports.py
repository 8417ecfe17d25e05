"""The run -> report arrow is a plain import: a run whose reports cannot be imported fails, it does not
silently end without a report (the conductor used to `try: import reports` and return no files)."""

from __future__ import annotations

import subprocess
import sys


def test_a_conductor_without_its_reports_fails_instead_of_skipping_the_report(tmp_path):
    script = (
        "import sys\n"
        "sys.modules['cachestorm.reports'] = None  # as if the package failed to import\n"
        "from cachestorm import conductor\n"
        f"print('rendered', conductor.render_run({str(tmp_path)!r}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0, result.stdout
    assert "rendered" not in result.stdout
    assert "import of cachestorm.reports halted" in result.stderr
