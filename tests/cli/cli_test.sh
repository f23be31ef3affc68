#!/usr/bin/env bash
# marty-bus, run as a user runs it. usage: cli_test.sh SCENARIO MARTY_BUS [WORK_DIR]
# Scenarios: config_errors, memory (no broker), nats_messaging, nats_sagas, nats_dead_letters
# (against the nats-server of scripts/brokers: MARTY_NATS_URL; unset is a failure).
set -uo pipefail
scenario=$1
bus=$2
docs=$(cd "$(dirname "$0")/../../docs" && pwd)
work=${3:-$(mktemp -d)}
# Every run starts from nothing: a saga store left by an earlier run would change what is listed.
rm -rf "$work" && mkdir -p "$work"
cd "$work" || exit 1
failures=0
# No marty-bus outlives the scenario, whatever stopped it.
trap 'kill $(jobs -p) 2> /dev/null' EXIT

# expect RC COMMAND...: runs it, keeping its output in $out, and checks its exit code.
expect() {
  local want=$1; shift
  out=$("$@" 2>&1)
  local rc=$?
  if [ "$rc" != "$want" ]; then
    echo "FAIL: exit $rc, expected $want: $*"; echo "$out" | sed 's/^/    /'
    failures=$((failures + 1))
  fi
}
# contains TEXT: the last command's output has TEXT.
contains() {
  if ! grep -qF -- "$1" <<< "$out"; then
    echo "FAIL: output lacks '$1'"; echo "$out" | sed 's/^/    /'
    failures=$((failures + 1))
  fi
}
# in_file FILE TEXT
in_file() {
  if ! grep -qF -- "$2" "$1"; then
    echo "FAIL: $1 lacks '$2'"; sed 's/^/    /' "$1"
    failures=$((failures + 1))
  fi
}
# A background marty-bus, its output in FILE.out; `wait_for_line FILE TEXT` waits until it is ready.
background() { local name=$1; shift; "$@" > "$name.out" 2>&1 & echo $! > "$name.pid"; }
wait_for_line() {
  for _ in $(seq 100); do grep -qF -- "$2" "$1.out" 2> /dev/null && return 0; sleep 0.1; done
  echo "FAIL: $1 never printed '$2'"; sed 's/^/    /' "$1.out"; failures=$((failures + 1)); return 1
}
finish_background() { wait "$(cat "$1.pid")"; }
# dead_letter EVENT_TYPE GROUP DATA FAILURE: a subscriber failing every delivery turns DATA into
# a dead letter of events.EVENT_TYPE (after the file's retries).
dead_letter() {
  background failing "$bus" "${cfg[@]}" sub "$1" -g "$2" --fail "$4" --for 60s
  wait_for_line failing "listening"
  expect 0 "$bus" "${cfg[@]}" pub "$1" "$3"
  for _ in $(seq 50); do
    "$bus" "${cfg[@]}" dlq list "events.$1" | grep -q "^1 dead letter" && break; sleep 0.2
  done
  kill "$(cat failing.pid)"; wait "$(cat failing.pid)" 2> /dev/null
}

need_nats() {
  if [ -z "${MARTY_NATS_URL:-}" ]; then
    echo "FAIL: MARTY_NATS_URL is not set (scripts/brokers start nats; source build/brokers/env.sh)"
    exit 1
  fi
  cat > nats.yaml << EOF
service: cli-test
backends:
  nats:
    servers: ["\${MARTY_NATS_URL}"]
    connect_timeout: 2s
default_backend: nats
patterns:
  pub_sub: {retry_count: 1, initial_backoff: 10ms}
sagas:
  store: {type: sqlite, path: $work/sagas.db}
  definitions:
    order_flow:
      steps:
        - {name: reserve, service: inventory-$$, action: reserve, compensation: release, timeout: 3s}
        - {name: charge, service: billing-$$, action: charge, compensation: refund, timeout: 3s,
           retry: {max_attempts: 1}}
EOF
  cfg=(-c nats.yaml)
}

case $scenario in
  config_errors)
    cat > bad.yaml << 'EOF'
service: shop
backends:
  nats:
    severs: ["nats://127.0.0.1:4222"]
    connect_timeout: 2
  redis:
    port: many
routes:
  - match: "orders.*"
    backend: kafka
patterns:
  pub_sub: {timeout: 10 seconds, retry_count: -1}
sagas:
  definitions:
    empty_saga: {steps: []}
EOF
    expect 3 "$bus" config check bad.yaml
    contains "bad.yaml:4:5: backends.nats: unknown key 'severs' (did you mean 'servers'?)"
    contains "bad.yaml:5:22: backends.nats.connect_timeout: '2' needs a unit (ms, s, m, h or d)"
    contains "bad.yaml:7:11: backends.redis.port: 'many' is not a whole number"
    contains "bad.yaml:10:14: routes[0].backend: backend 'kafka' is not declared under backends"
    contains "bad.yaml:12:22: patterns.pub_sub.timeout: '10 seconds' has an unknown unit ' seconds'"
    contains "patterns.pub_sub: retry_count must not be negative"
    contains "sagas.definitions.empty_saga"
    printf 'backends:\n  nats:\n    password: ${MARTY_CLI_TEST_UNSET}\n' > env.yaml
    expect 3 "$bus" config check env.yaml
    contains "env.yaml:3:15: backends.nats.password: environment variable MARTY_CLI_TEST_UNSET is not set"
    # A value from the environment is never repeated in an error: it may be a secret.
    printf 'backends:\n  redis:\n    port: ${MARTY_CLI_TEST_SECRET}\n' > secret.yaml
    MARTY_CLI_TEST_SECRET=hunter2 expect 3 "$bus" config check secret.yaml
    contains "'\${MARTY_CLI_TEST_SECRET}' is not a whole number"
    if grep -q hunter2 <<< "$out"; then echo "FAIL: a secret was printed"; failures=$((failures + 1)); fi
    printf 'drain_timeout: ${MARTY_CLI_TEST_SECRET}\ndefault_backend: ${MARTY_CLI_TEST_SECRET}\n' > secret2.yaml
    MARTY_CLI_TEST_SECRET=hunter2 expect 3 "$bus" config check secret2.yaml
    contains "'\${MARTY_CLI_TEST_SECRET}' is not a duration"
    contains "'\${MARTY_CLI_TEST_SECRET}' is not a backend type"
    if grep -q hunter2 <<< "$out"; then echo "FAIL: a secret was printed"; failures=$((failures + 1)); fi
    printf 'backends: [nats\n' > syntax.yaml
    expect 3 "$bus" config check syntax.yaml
    contains "syntax.yaml:2:1:"
    expect 5 "$bus" config check no-such-file.yaml
    contains "cannot read configuration file no-such-file.yaml"
    # TLS: the keys NATS and RabbitMQ share, and RabbitMQ's own verify_peer.
    printf 'backends:\n  nats: {tls: {enabled: true, verify_peer: true}}\n  rabbitmq: {tls: {enabled: true, verify_peer: false}}\n' > tls.yaml
    expect 3 "$bus" config check tls.yaml
    contains "backends.nats.tls: unknown key 'verify_peer'"
    if grep -q "backends.rabbitmq" <<< "$out"; then echo "FAIL: rabbitmq tls refused"; failures=$((failures + 1)); fi
    mkdir -p conf.d
    expect 3 "$bus" config check conf.d
    contains "is a directory"
    # The complete file of docs/configuration.md is a valid file.
    awk '/^```yaml/{f=1;next} /^```/{if(f)exit} f' "$docs/configuration.md" > documented.yaml
    NATS_TOKEN=t KAFKA_BROKERS=127.0.0.1:9092 expect 0 "$bus" config check documented.yaml
    contains "sagas          1, store sqlite"
    printf 'backends:\n  memory: {}\n' > good.yaml
    MARTY_BUS_CONFIG=good.yaml expect 0 "$bus" config check
    contains "good.yaml: ok"
    expect 3 "$bus" -c good.yaml --backend kafka pub x
    contains "declares no such backend"
    expect 2 "$bus" pub
    expect 2 "$bus" no-such-command
    ;;

  memory)
    expect 0 "$bus" --help
    for command in pub send request sub reply backends bench "saga list" "saga show" "saga start" \
        "saga cancel" "dlq list" "dlq requeue" "dlq purge" "config check"; do
      # shellcheck disable=SC2086
      expect 0 "$bus" $command --help
    done
    expect 0 "$bus" backends
    contains "dead-letter admin"
    expect 0 "$bus" --json backends
    contains '"backend":"memory"'
    expect 0 "$bus" backends --connect
    contains "connection"
    expect 0 "$bus" pub orders.placed '{"id":1}' -k a -H origin=test
    contains "published 1 event(s) orders.placed"
    # The embedded backend needs no declaration to be named.
    expect 0 "$bus" -b memory pub orders.placed '{"id":2}'
    contains "published 1 event(s) orders.placed"
    expect 3 "$bus" pub orders.placed '{not json'
    contains "data is not JSON"
    expect 3 "$bus" pub orders.placed '{}' -H novalue
    contains "expected name=value"
    # Nobody listens in this process: the memory backend says so at once.
    expect 5 "$bus" request stock '{}' --to nobody
    contains "not_found"
    expect 4 "$bus" sub orders.placed -n 1 --for 300ms
    contains "received 0 of 1 event(s)"
    # Ctrl-C is how a tail ends: exit 0, even short of --count.
    background tail "$bus" sub orders.placed -n 5 --for 60s
    wait_for_line tail "listening"
    kill -INT "$(cat tail.pid)"
    wait "$(cat tail.pid)"
    rc=$?
    [ "$rc" = 0 ] || { echo "FAIL: sub ended by SIGINT exited $rc"; failures=$((failures + 1)); }
    expect 0 "$bus" dlq list events.orders.placed
    contains "0 dead letter(s)"
    expect 3 "$bus" dlq purge events.orders.placed
    contains "with --id or --all"
    expect 0 "$bus" dlq purge events.orders.placed --all
    contains "purged 0 dead letter(s)"
    for pattern in events commands queries; do
      expect 0 "$bus" bench -p $pattern -n 2000 --in-flight 16
      contains "backend memory, $pattern, 2000 messages"
      contains "p999"
    done
    expect 0 "$bus" --json bench -n 500
    contains '"throughput_per_second"'
    # A saga whose participant does not exist: its first step fails, nothing to compensate.
    cat > saga.yaml << 'EOF'
sagas:
  definitions:
    lonely:
      steps:
        - {name: ask, service: nobody, action: ask, compensation: unask, timeout: 1s,
           retry: {max_attempts: 2, initial_backoff: 10ms}}
EOF
    expect 10 "$bus" -c saga.yaml saga start lonely '{"n":1}' --wait 10s
    contains "state     compensated"
    contains "1. ask: failed  attempts=2"
    expect 5 "$bus" -c saga.yaml saga start no_such_saga
    expect 0 "$bus" -c saga.yaml saga list
    contains "0 saga(s)"  # the memory store lives as long as the process
    ;;

  nats_messaging)
    need_nats
    expect 0 "$bus" "${cfg[@]}" backends --connect
    contains "connection            ok"
    background sub "$bus" "${cfg[@]}" sub "cli$$.placed" -n 2 -g "g$$" --for 60s
    wait_for_line sub "listening on 1 event type(s)"
    expect 0 "$bus" "${cfg[@]}" pub "cli$$.placed" '{"order":7}' -n 2 -k key7
    finish_background sub || { echo "FAIL: sub exited $?"; failures=$((failures + 1)); }
    in_file sub.out "events.cli$$.placed"
    in_file sub.out "key=key7"
    in_file sub.out '{"order":7}'
    background json "$bus" "${cfg[@]}" --json sub "cli$$.json" -n 1 --for 60s
    wait_for_line json "listening on 1 event type(s)"  # standard error, also with --json
    expect 0 "$bus" "${cfg[@]}" pub "cli$$.json" '{"n":1}' --correlation-id corr-1
    finish_background json || { echo "FAIL: json sub exited $?"; failures=$((failures + 1)); }
    in_file json.out '"correlation_id":"corr-1"'
    in_file json.out '"data":{"n":1}'
    background reply "$bus" "${cfg[@]}" reply stock -s "inventory$$" -r '{"in_stock":true}' -n 1 --for 60s
    wait_for_line reply "answering 1 query type(s)"
    expect 0 "$bus" "${cfg[@]}" request stock '{"sku":"a"}' --to "inventory$$"
    contains '"in_stock": true'
    finish_background reply
    in_file reply.out '{"sku":"a"}'
    background refuse "$bus" "${cfg[@]}" reply stock -s "inventory$$" --fail "not_found:no sku b" -n 1 --for 60s
    wait_for_line refuse "answering"
    expect 5 "$bus" "${cfg[@]}" request stock '{"sku":"b"}' --to "inventory$$"
    contains "no sku b"
    finish_background refuse
    expect 5 "$bus" "${cfg[@]}" request stock '{}' --to "nobody$$" -t 300ms
    contains "no responder"
    # Ctrl-C during a request ends it at once (1), not after the 30 s it would wait.
    background slow "$bus" "${cfg[@]}" reply stock -s "slow$$" --delay 20s --for 30s
    wait_for_line slow "answering"
    background asking "$bus" "${cfg[@]}" request stock '{}' --to "slow$$"
    wait_for_line slow "queries.slow$$.stock"  # the query is with the responder
    kill -INT "$(cat asking.pid)"
    started=$(date +%s)
    rc=0; finish_background asking || rc=$?
    [ "$rc" = 1 ] || { echo "FAIL: request ended by SIGINT exited $rc"; failures=$((failures + 1)); }
    [ $(($(date +%s) - started)) -lt 5 ] || { echo "FAIL: request took long to end after SIGINT"; failures=$((failures + 1)); }
    in_file asking.out "cancelled: interrupted during request"
    kill "$(cat slow.pid)" 2> /dev/null; wait "$(cat slow.pid)" 2> /dev/null
    # Ctrl-C during pub -n on a healthy broker ends it at once (1), saying how far it got (each
    # publish was once too quick for the wait to look for the signal: all were published).
    background many "$bus" "${cfg[@]}" pub "cli$$.many" '{}' -n 1000000
    sleep 1
    kill -INT "$(cat many.pid)"
    started=$(date +%s)
    rc=0; finish_background many || rc=$?
    [ "$rc" = 1 ] || { echo "FAIL: pub -n ended by SIGINT exited $rc"; failures=$((failures + 1)); }
    [ $(($(date +%s) - started)) -lt 5 ] || { echo "FAIL: pub -n took long to end after SIGINT"; failures=$((failures + 1)); }
    in_file many.out "cancelled: interrupted during pub, after"
    in_file many.out " of 1000000 event(s) cli$$.many"
    grep -q "^published 1000000 " many.out && { echo "FAIL: pub -n published all after SIGINT"; failures=$((failures + 1)); }
    # pub -n --json says which it published, on success and on failure alike.
    expect 0 "$bus" "${cfg[@]}" --json pub "cli$$.ids" '{}' -n 3
    ids=$(grep -o '"ids":\[[^]]*\]' <<< "$out" | grep -o '"[0-9a-f-]\{36\}"' | sort -u | wc -l)
    [ "$ids" = 3 ] || { echo "FAIL: pub --json lists $ids ids, not 3: $out"; failures=$((failures + 1)); }
    contains '"published":3'
    background cmd "$bus" "${cfg[@]}" sub ">" -n 1 --for 20s
    for pattern in events queries; do
      expect 0 "$bus" "${cfg[@]}" bench -p $pattern -n 1000 --in-flight 8
      contains "backend nats, $pattern, 1000 messages"
    done
    kill "$(cat cmd.pid)" 2> /dev/null; wait "$(cat cmd.pid)" 2> /dev/null
    # A backend that cannot be reached: named, with the exit code of `unavailable`.
    printf 'backends:\n  nats:\n    servers: ["nats://127.0.0.1:1"]\n    connect_timeout: 500ms\n' > down.yaml
    expect 14 "$bus" -c down.yaml backends --connect
    contains "FAILED"
    expect 14 "$bus" -c down.yaml pub "cli$$.down" '{}' -n 5
    contains "published 0 of 5 event(s)"
    ;;

  nats_sagas)
    need_nats
    background inventory "$bus" "${cfg[@]}" reply reserve release -s "inventory-$$" -r '{}' --for 60s
    background billing "$bus" "${cfg[@]}" reply charge refund -s "billing-$$" -r '{"context":{"paid":true}}' --for 60s
    wait_for_line inventory "answering"
    wait_for_line billing "answering"
    expect 0 "$bus" "${cfg[@]}" saga start order_flow '{"order":1}' --wait 30s
    contains "state     completed"
    contains '"paid":true'
    kill "$(cat billing.pid)"; wait "$(cat billing.pid)" 2> /dev/null
    background declined "$bus" "${cfg[@]}" reply charge refund -s "billing-$$" --fail "failed_precondition:card declined" --for 60s
    wait_for_line declined "answering"
    expect 10 "$bus" "${cfg[@]}" saga start order_flow '{"order":2}' --wait 30s
    contains "state     compensated"
    contains "1. reserve: compensated"
    contains "card declined"
    in_file inventory.out "queries.inventory-$$.release"
    kill "$(cat declined.pid)"; wait "$(cat declined.pid)" 2> /dev/null
    # A saga left unfinished: its orchestrator gave up waiting during the (slow) first step, so
    # it stopped after that step. Another one cancels it: what was done is undone.
    kill "$(cat inventory.pid)"; wait "$(cat inventory.pid)" 2> /dev/null
    background slow "$bus" "${cfg[@]}" reply reserve release -s "inventory-$$" -r '{}' --delay 1s --for 60s
    background billing "$bus" "${cfg[@]}" reply charge refund -s "billing-$$" -r '{}' --for 60s
    wait_for_line slow "answering"
    wait_for_line billing "answering"
    expect 4 "$bus" "${cfg[@]}" saga start order_flow '{"order":3}' --wait 300ms
    contains "stays in the store, unfinished"
    id=$("$bus" "${cfg[@]}" --json saga list --unfinished | head -1 | sed 's/.*"id":"\([^"]*\)".*/\1/')
    [ -n "$id" ] || { echo "FAIL: no unfinished saga"; failures=$((failures + 1)); }
    expect 0 "$bus" "${cfg[@]}" saga show "$id"
    contains "1. reserve: completed"
    contains "2. charge: pending"
    expect 0 "$bus" "${cfg[@]}" saga cancel "$id" --wait 30s
    contains "state     compensated (cancel requested)"
    contains "1. reserve: compensated"
    contains "2. charge: pending"
    expect 0 "$bus" "${cfg[@]}" saga show "$id"
    contains "saga $id (order_flow)"
    expect 9 "$bus" "${cfg[@]}" saga cancel "$id"
    contains "has ended"
    expect 0 "$bus" "${cfg[@]}" saga list --state completed
    contains "1 saga(s)"
    # Ctrl-C while a saga runs: exit 1 (cancelled) after the step in flight; the saga stays,
    # unfinished, to be resumed.
    background interrupted "$bus" "${cfg[@]}" saga start order_flow '{"order":4}' --wait 60s
    wait_for_line interrupted "started saga"
    kill -INT "$(cat interrupted.pid)"
    wait "$(cat interrupted.pid)"
    rc=$?
    [ "$rc" = 1 ] || { echo "FAIL: saga start ended by SIGINT exited $rc"; failures=$((failures + 1)); }
    in_file interrupted.out "interrupted: saga"
    in_file interrupted.out "stays in the store, unfinished"
    expect 0 "$bus" "${cfg[@]}" saga list --unfinished
    contains "1 saga(s)"
    # An operator finishes it: resume takes it over and drives it to its end.
    id=$("$bus" "${cfg[@]}" --json saga list --unfinished | head -1 | sed 's/.*"id":"\([^"]*\)".*/\1/')
    expect 0 "$bus" "${cfg[@]}" saga resume "$id" --wait 30s
    contains "saga $id (order_flow)"
    contains "state     completed"
    expect 9 "$bus" "${cfg[@]}" saga resume "$id"
    contains "has ended"
    expect 3 "$bus" "${cfg[@]}" saga resume
    contains "give an id or --all"
    # Two left unfinished, resumed together.
    expect 4 "$bus" "${cfg[@]}" saga start order_flow '{"order":5}' --wait 300ms
    expect 4 "$bus" "${cfg[@]}" saga start order_flow '{"order":6}' --wait 300ms
    expect 0 "$bus" "${cfg[@]}" saga resume --all --wait 30s
    contains "resumed 2 saga(s)"
    [ "$(grep -c "state     completed" <<< "$out")" = 2 ] || { echo "FAIL: resume --all did not complete both"; echo "$out"; failures=$((failures + 1)); }
    # A long-running orchestrator takes over what another left unfinished, until Ctrl-C.
    expect 4 "$bus" "${cfg[@]}" saga start order_flow '{"order":7}' --wait 300ms
    background orchestrator "$bus" "${cfg[@]}" saga orchestrate --every 500ms
    wait_for_line orchestrator "resumed 1 saga(s)"
    for _ in $(seq 100); do
      "$bus" "${cfg[@]}" saga list --unfinished | grep -q "^0 saga(s)" && break; sleep 0.2
    done
    expect 0 "$bus" "${cfg[@]}" saga list --unfinished
    contains "0 saga(s)"
    kill -INT "$(cat orchestrator.pid)"
    rc=0; finish_background orchestrator || rc=$?
    [ "$rc" = 0 ] || { echo "FAIL: saga orchestrate ended by SIGINT exited $rc"; failures=$((failures + 1)); }
    expect 5 "$bus" "${cfg[@]}" saga show no-such-id
    kill "$(cat slow.pid)" "$(cat billing.pid)"; wait 2> /dev/null
    ;;

  nats_dead_letters)
    need_nats
    subject="events.dlq$$.placed"
    # Every delivery fails: one retry (the file's pub_sub retry_count), then a dead letter.
    dead_letter "dlq$$.placed" "g$$" '{"order":9}' "unavailable:database down"
    expect 0 "$bus" "${cfg[@]}" dlq list "$subject"
    contains "1 dead letter(s)"
    contains "reason: "
    contains "database down"
    contains "attempts=2"
    expect 0 "$bus" "${cfg[@]}" --json dlq list "$subject"
    contains '"data":{"order":9}'
    id=$(sed -n 's/.*"id":"\([^"]*\)","reason".*/\1/p' <<< "$out" | head -1)
    [ -n "$id" ] || id=$("$bus" "${cfg[@]}" dlq list "$subject" | head -1 | cut -d' ' -f1)
    background healed "$bus" "${cfg[@]}" sub "dlq$$.placed" -g "g$$" -n 1 --for 30s
    wait_for_line healed "listening"
    expect 0 "$bus" "${cfg[@]}" dlq requeue "$subject" --id "$id"
    contains "requeued 1 dead letter(s)"
    finish_background healed || { echo "FAIL: the requeued event never came"; failures=$((failures + 1)); }
    in_file healed.out '{"order":9}'
    expect 0 "$bus" "${cfg[@]}" dlq list "$subject"
    contains "0 dead letter(s)"
    dead_letter "dlq$$.placed" "g$$" '{"order":10}' internal
    expect 0 "$bus" "${cfg[@]}" dlq purge "$subject" --all
    contains "purged 1 dead letter(s)"
    expect 0 "$bus" "${cfg[@]}" dlq list "$subject"
    contains "0 dead letter(s)"
    ;;

  *)
    echo "unknown scenario $scenario"; exit 2 ;;
esac

if [ "$failures" -gt 0 ]; then
  echo "$scenario: $failures failure(s)"
  exit 1
fi
echo "$scenario: ok"
