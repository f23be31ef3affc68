#!/usr/bin/env bash
# Runs every libFuzzer target of build/fuzz for SECONDS each (default 60), starting from the
# seeds in tests/fuzz/corpus/<target> and keeping what it learns in build/fuzz/corpus/<target>.
# A crash, leak, sanitizer report or broken round trip fails the run; the input that caused it
# is in build/fuzz/artifacts/ (rerun: build/fuzz/tests/fuzz/<target> <that file>).
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
bin=build/fuzz/tests/fuzz
mapfile -t targets < <(if [ $# -gt 0 ]; then printf '%s\n' "$@"; else
  find "$bin" -maxdepth 1 -type f -name 'fuzz_*' -perm -u+x -printf '%f\n' | sort; fi)
[ ${#targets[@]} -gt 0 ] || { echo "[fuzz] no targets in $bin (./run build fuzz)" >&2; exit 1; }
mkdir -p build/fuzz/artifacts
failed=0
for target in "${targets[@]}"; do
  corpus=build/fuzz/corpus/$target
  mkdir -p "$corpus"
  cp -n tests/fuzz/corpus/"$target"/* "$corpus"/ 2> /dev/null || true
  log=build/fuzz/$target.log
  printf '[fuzz] %-24s %4ss ... ' "$target" "$seconds"
  if ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
      "$bin/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix=build/fuzz/artifacts/"$target"- -print_final_stats=1 "$corpus" \
      > "$log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    echo "ok ($runs inputs, corpus $(ls "$corpus" | wc -l))"
  else
    echo "FAILED (see $log)"
    grep -m 5 -E 'ERROR|runtime error|SUMMARY|deadly' "$log" || true
    failed=1
  fi
done
exit $failed
