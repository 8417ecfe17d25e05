#!/usr/bin/env bash
# CI's bar for the shipped gate: .github/workflows/cachestorm-gate.yml's commands, shortened
# (--duration 18s: the hot keys expire from 10 s to 16 s). examples/gate.yaml holds every strategy to
# the same SLOs, so on a healthy build:
#   1. the protected strategy (cache-aside+coalescing) passes it;
#   2. plain cache-aside (no stampede protection) fails it, exit 1, with the incident's reasons: the DB
#      pool ran dry, requests failed, and each hot-key expiry sent a herd of loads to the DB;
#   3. with coalescing deliberately broken (a CI-only switch, CACHESTORM_TEST_BROKEN_PROTECTIONS, see
#      targets/strategies/__init__.py) the protected strategy fails it with exit 1.
# Needs the venv of scripts/test.sh. About 3 minutes on 2 busy cores (three runs, one of them short of
# the healthy matrix's second strategy).
set -euo pipefail
cd "$(dirname "$0")/.."
cachestorm=(.venv/bin/python -m cachestorm)
out=$(mktemp -d -t cachestorm-gate-check-XXXXXX)
trap 'rm -rf "$out"' EXIT
export COLUMNS=200  # the gate's lines unwrapped in the log

matrix() {  # $1: where, $2: strategies
  "${cachestorm[@]}" matrix --strategies "$2" --experiments hot-key-expiry \
    --duration "${GATE_CHECK_DURATION:-18s}" --out "$out/$1" >"$out/$1.log" 2>&1 \
    || { cat "$out/$1.log" >&2; echo "gate-check: the $1 matrix did not run" >&2; exit 1; }
}
gate() {  # $1: a name for the outputs, then run folders; prints the verdict, returns the gate's exit code
  local name=$1; shift
  echo "--- gate: $name"
  "${cachestorm[@]}" gate "$@" --config examples/gate.yaml --junit "$out/$name.xml" --markdown "$out/$name.md"
}

matrix healthy cache-aside,cache-aside+coalescing
protected=("$out"/healthy/matrix-*/*-cache-aside+coalescing-hot-key-expiry)
unprotected=("$out"/healthy/matrix-*/*-cache-aside-hot-key-expiry)
passed=0

if ! gate protected "${protected[@]}"; then
  echo "gate-check: FAILED: the shipped gate fails cache-aside+coalescing on a healthy build" >&2
  exit 1
fi
passed=$((passed + 1))

status=0
gate unprotected "${unprotected[@]}" || status=$?
if [ "$status" -ne 1 ]; then
  echo "gate-check: FAILED: plain cache-aside under a hot-key expiry: the gate exited $status, expected 1" >&2
  exit 1
fi
# the incident's reasons, each a failed SLO (❌) in the gate's Markdown verdict
for metric in pool_timeouts error_rate 'db_load(s|_attempts)_per_expiry'; do
  if ! grep -E "^\| ❌ .*\| ${metric} = " "$out/unprotected.md" >/dev/null; then
    echo "gate-check: FAILED: plain cache-aside failed the gate, but not on ${metric}" >&2
    cat "$out/unprotected.md" >&2
    exit 1
  fi
done
passed=$((passed + 1))

CACHESTORM_TEST_BROKEN_PROTECTIONS=coalescing matrix broken cache-aside+coalescing
status=0
gate broken "$out"/broken/matrix-*/*-hot-key-expiry || status=$?
if [ "$status" -ne 1 ]; then
  echo "gate-check: FAILED: with coalescing broken the gate exited $status, expected 1 (SLOs violated)" >&2
  exit 1
fi
passed=$((passed + 1))
echo "gate-check: ok (coalescing passes the shipped gate; plain cache-aside fails it on pool timeouts," \
  "error rate and DB loads per expiry; broken coalescing fails it)"
echo "gate-check: $passed passed, 0 failed"
