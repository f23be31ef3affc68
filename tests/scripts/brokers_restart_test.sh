#!/usr/bin/env bash
# scripts/brokers restart keeps what a broker printed before (a crash's log was lost when its
# console output file was truncated at every start): every start appends, after a marked line.
# Runs its own NATS server in a broker directory of its own, so the shared brokers are untouched.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
export BROKER_DIR
BROKER_DIR=$(mktemp -d /tmp/marty-brokers-XXXXXX)
trap '"$root/scripts/brokers" stop nats > /dev/null 2>&1 || true; rm -rf "$BROKER_DIR"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$root/scripts/brokers" start nats > /dev/null
echo "said before the crash" >> "$BROKER_DIR/nats.out"
kill -9 "$(cat "$BROKER_DIR/nats.pid")"
"$root/scripts/brokers" restart nats > /dev/null

grep -q "said before the crash" "$BROKER_DIR/nats.out" || fail "the output from before the restart is gone"
starts=$(grep -c '^==== \[brokers\] nats started' "$BROKER_DIR/nats.out")
[ "$starts" -eq 2 ] || fail "expected 2 marked starts in nats.out, found $starts"
echo "ok: nats.out kept both runs"
