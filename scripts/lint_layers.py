"""`lint-imports` (the layer contracts in pyproject.toml) on the package as it is installed.

grimp walks one folder per package, but our subpackages come from the checkout's top-level folders
(setup.py's FOLDERS: targets/ is cachestorm.targets, ...). So the installed layout is laid out first,
as symlinks in a temp folder, and lint-imports reads that. Exit status is lint-imports' own.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def folders() -> dict[str, str]:
    """setup.py's FOLDERS (package -> folder), read without running setup()."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "FOLDERS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise SystemExit("setup.py has no FOLDERS mapping")


def lay_out(root: Path) -> None:
    mapping = folders()
    (root / "cachestorm").mkdir()
    for entry in (REPO / mapping["cachestorm"]).iterdir():
        (root / "cachestorm" / entry.name).symlink_to(entry)
    for package, folder in mapping.items():
        if package != "cachestorm":
            (root / package.replace(".", "/")).symlink_to(REPO / folder)


def main(argv: list[str]) -> int:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    with tempfile.TemporaryDirectory(prefix="cachestorm-layers-") as root:
        lay_out(Path(root))
        env = {**os.environ, "PYTHONPATH": root}
        # cwd is the temp folder, or the checkout's cachestorm/ (without its mapped folders) would win
        return subprocess.run([str(lint_imports), str(REPO / "pyproject.toml"), *argv], cwd=root, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
