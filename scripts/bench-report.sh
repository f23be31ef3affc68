#!/usr/bin/env bash
# Runs every benchmark and writes docs/benchmarks.md, with the side-by-side figures in
# docs/benchmarks.tsv and a chart of them (docs/benchmarks.png).
# usage: scripts/bench-report.sh BUILD_DIR   (the brokers of scripts/brokers running, env.sh sourced)
#        scripts/bench-report.sh --chart     (draws the chart again from docs/benchmarks.tsv)
#
# Two kinds of figures, all from this one run:
# - per backend, the bus against that broker's own client library (bench/*_bench.cpp), as ratios;
# - every backend side by side through `marty-bus bench` (bench/marty-bus-bench.yaml): event
#   throughput with 64 sends in flight, and query round trips one at a time.
set -euo pipefail
build=${1:?usage: scripts/bench-report.sh BUILD_DIR | --chart}
root=$(cd "$(dirname "$0")/.." && pwd)
figures=$root/docs/benchmarks.tsv
command -v gnuplot > /dev/null || { echo "bench-report: no gnuplot (scripts/deps.sh bench)" >&2; exit 2; }
command -v valgrind > /dev/null || { echo "bench-report: no valgrind (scripts/deps.sh bench)" >&2; exit 2; }

say() { printf '\033[1m[bench]\033[0m %s\n' "$*" >&2; }

# The chart of docs/benchmarks.tsv, whose first line (a comment) names the machine and the day.
# noenhanced: "aws_sns" is a name, not a subscript.
draw_chart() {
  say "drawing docs/benchmarks.png"
  local title
  title=$(sed -n '1s/^# //p' "$figures")
  gnuplot << EOF
set terminal pngcairo size 1100,460 font "DejaVu Sans,10" noenhanced
set output "$root/docs/benchmarks.png"
set multiplot layout 1,2 title "$title (log scales)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set logscale y
set grid ytics
set xtics rotate by -30
set key top right
set title "Throughput, 64 sends in flight (msg/s)"
plot "$figures" using 3:xtic(1) title "messages/s" linecolor rgb "#3b6ea8"
set title "Query round trip, one at a time (microseconds)"
plot "$figures" using 7:xtic(1) title "p50" linecolor rgb "#3b6ea8", \
     "" using 8 title "p99" linecolor rgb "#d08a2e", \
     "" using 9 title "p99.9" linecolor rgb "#a33b3b"
unset multiplot
EOF
}

if [ "$build" = --chart ]; then
  [ -f "$figures" ] || { echo "bench-report: no $figures: run ./run bench first" >&2; exit 2; }
  draw_chart
  exit 0
fi

bus=$build/tools/marty-bus/marty-bus
config=$root/bench/marty-bus-bench.yaml
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[ -x "$bus" ] || { echo "bench-report: no marty-bus in $build" >&2; exit 2; }

# 1. Bus against raw client, per backend.
names=(memory nats redis rabbitmq kafka aws saga)
for name in "${names[@]}"; do
  say "$name: bus against the raw client"
  "$build/bench/marty_bench_$name" | tee "$work/$name.txt"
done

# 2. Every backend through marty-bus. AWS emulators are slow per call: fewer messages there.
# backend:throughput-pattern:messages
runs=(memory:events:50000 nats:events:20000 redis:events:20000 rabbitmq:events:10000
  kafka:events:10000 aws_sns:events:500 aws_sqs:commands:500)
{  # comments, which gnuplot skips: what was measured, and the columns
  echo "# marty-bus bench on $(nproc) cores, $(date -u +%Y-%m-%d), commit $(git -C "$root" rev-parse --short HEAD)"
  printf '# backend\tpattern\tthroughput\tload_p50\tload_p99\tload_p999\tquery_p50\tquery_p99\tquery_p999\n'
} > "$work/side-by-side.tsv"
for run in "${runs[@]}"; do
  IFS=: read -r backend pattern messages <<< "$run"
  say "$backend: marty-bus bench ($pattern, then queries)"
  load=$("$bus" -c "$config" -b "$backend" --json bench -p "$pattern" -n "$messages" --in-flight 64)
  queries=$((messages / 10 < 2000 ? messages / 10 : 2000))
  query=$("$bus" -c "$config" -b "$backend" --json bench -p queries -n "$queries" --in-flight 1)
  field() { sed -n "s/.*\"$2\":\([-0-9.e+]*\).*/\1/p" <<< "$1"; }
  printf '%s\t%s\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\n' "$backend" "$pattern" \
    "$(field "$load" throughput_per_second)" "$(field "$load" p50)" "$(field "$load" p99)" \
    "$(field "$load" p999)" "$(field "$query" p50)" "$(field "$query" p99)" \
    "$(field "$query" p999)" >> "$work/side-by-side.tsv"
done

cp "$work/side-by-side.tsv" "$figures"
draw_chart

# 3. What one message costs on the memory path, publisher and consumer together: instructions
# (callgrind) and heap allocations (memcheck), each as the difference of two run sizes divided
# by the difference in messages, so that start-up and shutdown cancel out.
say "memory: instructions and allocations per message (valgrind)"
memory_bench=$build/bench/marty_bench_memory
small=20000 large=60000
instructions() {
  valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.$1" \
    "$memory_bench" --only-bus --messages "$1" --runs 1 > /dev/null 2>&1
  sed -n 's/^summary: *//p' "$work/callgrind.$1"
}
allocations() {
  valgrind --tool=memcheck --leak-check=no "$memory_bench" --only-bus --messages "$1" --runs 1 2>&1 |
    sed -n 's/.*total heap usage: \([0-9,]*\) allocs.*/\1/p' | tr -d ,
}
per_message() { echo $((($2 - $1) / (large - small))); }
ir_per_message=$(per_message "$(instructions $small)" "$(instructions $large)")
allocs_per_message=$(per_message "$(allocations $small)" "$(allocations $large)")

say "writing docs/benchmarks.md"
{
  cat << EOF
# Benchmarks

Written by \`./run bench\` (scripts/bench-report.sh) on $(date -u +%Y-%m-%d), commit
$(git -C "$root" rev-parse --short HEAD), $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)).
Every figure comes from this one run, against the brokers of \`scripts/brokers\` on loopback
(Kafka: librdkafka's mock cluster; SNS and SQS: local emulators). Machines are noisy: compare the
ratios within a table, not figures across runs. ${#runs[@]} backends, one payload size: 128 bytes.

## Every backend through the bus

\`marty-bus bench\` with \`bench/marty-bus-bench.yaml\`: *throughput* sends events (SQS:
commands) with 64 sends awaiting the broker at once, to one consumer group, and counts until
the handler has seen them all; *under load* is the latency of those messages, send to handler,
queueing included. *Query* is a request/response round trip with one query in flight.

![throughput and query latency per backend](benchmarks.png)

The same figures are in [benchmarks.tsv](benchmarks.tsv); `scripts/bench-report.sh --chart`
draws the chart from it again.

| backend | sent as | msg/s | under load p50 / p99 / p99.9 (us) | query p50 / p99 / p99.9 (us) |
|---|---|--:|--:|--:|
EOF
  grep -v '^#' "$figures" | while IFS=$'\t' read -r b p t l50 l99 l999 q50 q99 q999; do
    echo "| $b | $p | $t | $l50 / $l99 / $l999 | $q50 / $q99 / $q999 |"
  done
  cat << 'EOF'

Reproduce one line: `marty-bus -c bench/marty-bus-bench.yaml -b nats bench -n 20000` (after
`scripts/brokers start` and `source build/brokers/env.sh`).

## Headline measures

Every bench program ends with one `RESULT <id> bus=<value> baseline=<value> ratio=<bus/baseline>`
line per headline measure: rates in messages (or sagas) per second, latencies in microseconds.
The baseline is the broker's own client doing the same work (same wire bytes, acknowledgements
and window), ZeroMQ for the embedded backend, or the target figure the program names.

| measure | bus | baseline | bus / baseline |
|---|--:|--:|--:|
EOF
  cat "$work"/*.txt |
    sed -n 's/^RESULT \([^ ]*\) bus=\([^ ]*\) baseline=\([^ ]*\) ratio=\([^ ]*\)$/| `\1` | \2 | \3 | \4 |/p'
  cat << EOF

## What one message costs on the memory path

\`publish_event\` to a \`sync_handler\` on the embedded backend, publisher and consumer on two
threads, counted by valgrind on $small and $large messages (\`marty_bench_memory --only-bus\`),
the difference divided by the $((large - small)) messages between them:

| per message | count |
|---|--:|
| instructions (callgrind) | $ir_per_message |
| heap allocations (memcheck) | $allocs_per_message |

Instructions do not vary with the machine's speed; they still vary a little between runs,
because a consumer that finds its queue empty watches it for up to 100 µs before parking, and
under valgrind how long depends on how the two threads were scheduled.
EOF
  cat << 'EOF'

## The bus against each broker's own client

Each program measures the broker's client library alone (the baseline) and the bus over it, in
alternating runs of the same process; the ratio is what the bus costs or gains.
EOF
  for name in "${names[@]}"; do
    printf '\n### %s (`./run bench %s`)\n\n' "$name" "$name"
    cat "$work/$name.txt"
  done
} > "$root/docs/benchmarks.md"
say "done: docs/benchmarks.md, docs/benchmarks.tsv, docs/benchmarks.png"
