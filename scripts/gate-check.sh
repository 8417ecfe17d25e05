#!/usr/bin/env bash
# CI's bar for the shipped gate: .github/workflows/cachestorm-gate.yml's commands, shortened
# (--duration 18s: the hot keys expire from 10 s to 16 s). The matrix of a healthy build must pass
# examples/gate.yaml, and the same matrix with coalescing deliberately broken (a CI-only switch,
# CACHESTORM_TEST_BROKEN_PROTECTIONS, see targets/strategies/__init__.py) must fail it with exit 1.
# Needs the venv of scripts/test.sh. About 3 minutes on 2 busy cores.
set -euo pipefail
cd "$(dirname "$0")/.."
cachestorm=(.venv/bin/python -m cachestorm)
out=$(mktemp -d -t cachestorm-gate-check-XXXXXX)
trap 'rm -rf "$out"' EXIT

matrix() {  # $1: where
  "${cachestorm[@]}" matrix --strategies cache-aside,cache-aside+coalescing --experiments hot-key-expiry \
    --duration "${GATE_CHECK_DURATION:-18s}" --out "$out/$1" >"$out/$1.log" 2>&1 \
    || { cat "$out/$1.log" >&2; echo "gate-check: the $1 matrix did not run" >&2; exit 1; }
}
gate() {  # $1: which matrix; prints the verdict, returns the gate's exit code
  "${cachestorm[@]}" gate "$out/$1"/matrix-* --config examples/gate.yaml --junit "$out/$1.xml" \
    --markdown "$out/$1.md"
}

matrix healthy
if ! gate healthy; then
  echo "gate-check: FAILED: the shipped gate fails a healthy build" >&2
  exit 1
fi

CACHESTORM_TEST_BROKEN_PROTECTIONS=coalescing matrix broken
status=0
gate broken || status=$?
if [ "$status" -ne 1 ]; then
  echo "gate-check: FAILED: with coalescing broken the gate exited $status, expected 1 (SLOs violated)" >&2
  exit 1
fi
echo "gate-check: ok (healthy build passes the shipped gate; broken coalescing fails it)"
echo "gate-check: 2 passed, 0 failed"
