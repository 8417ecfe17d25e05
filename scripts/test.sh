#!/usr/bin/env bash
# Installs everything the tests need into .venv (and Chromium for the report's browser test),
# then runs the whole suite against real servers. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null
  else
    echo "note: Chromium is not installed; the report's browser test will be skipped (sudo apt-get install chromium)" >&2
  fi
fi
exec .venv/bin/pytest "$@"
