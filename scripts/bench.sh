#!/usr/bin/env bash
# Runs the benchmarks of a release build. usage: scripts/bench.sh BUILD_DIR [name...]
set -euo pipefail
build=$1; shift
names=${*:-memory nats redis rabbitmq kafka aws saga}
for name in $names; do
  binary=$build/bench/marty_bench_$name
  [ -x "$binary" ] || { echo "bench.sh: no benchmark '$name' ($binary)" >&2; exit 2; }
  echo "== $name"
  "$binary"
done
