"""The layering of pyproject.toml's import-linter contracts holds (cli -> conductor -> parts -> core)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def lint_layers(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "lint_layers.py"), *args],
                          capture_output=True, text=True, timeout=300)


def test_the_layer_contracts_are_kept():
    done = lint_layers()
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_outside_the_checkout_only_cachestorm_imports(tmp_path):
    probe = ("import importlib.util, json; print(json.dumps({n: importlib.util.find_spec(n) is not None "
             "for n in ['cachestorm', 'cachestorm.targets', 'cachestorm.chaos', 'cachestorm.reports', "
             "'cachestorm.traffic', 'targets', 'chaos', 'reports', 'locustfiles']}))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    found = __import__("json").loads(done.stdout)
    assert {name for name, ok in found.items() if ok} == {
        "cachestorm", "cachestorm.targets", "cachestorm.chaos", "cachestorm.reports", "cachestorm.traffic"}


def test_the_cli_finds_its_own_files_outside_the_checkout(tmp_path):
    """Ready experiments and locustfiles are found through the package, not the working folder (in the
    checkout, its folders are importable by their old top-level names and would hide the mistake)."""
    done = subprocess.run([sys.executable, "-m", "cachestorm", "chaos", "list"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "hot-key-expiry" in done.stdout and "Traceback" not in done.stderr
    from cachestorm.traffic import locustfile

    assert locustfile("profiles").is_file()
