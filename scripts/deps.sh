#!/usr/bin/env bash
# Installs the Debian packages a task needs, only those missing, and says what it installs.
# usage: scripts/deps.sh [build|test|bench|all]...   (default: build)
# Runs as root on Debian 12 (the project's machines); elsewhere it prints the list and fails.
set -euo pipefail

build_pkgs=(g++ cmake ninja-build ccache pkg-config git libyaml-cpp-dev libcli11-dev
  libasio-dev nlohmann-json3-dev libspdlog-dev libfmt-dev libsqlite3-dev)
# Brokers and their client libraries: the tests run against real servers (scripts/brokers).
broker_pkgs=(nats-server libnats-dev redis-server redis-tools libhiredis-dev
  rabbitmq-server librabbitmq-dev librdkafka-dev curl procps openssl)
# The AWS backends' libraries, and node and npm for the AWS emulators, the AWS SDK for
# JavaScript (the tests' and benchmark's peer) and the tests' fixtures (scripts/js-deps.sh).
aws_pkgs=(libssl-dev libcurl4-openssl-dev libxml2-dev nodejs npm)
test_pkgs=(libgtest-dev clang-format clang "${aws_pkgs[@]}" "${broker_pkgs[@]}")
bench_pkgs=(libzmq3-dev libconcurrentqueue-dev gnuplot-nox valgrind "${aws_pkgs[@]}" "${broker_pkgs[@]}")

wanted=()
for profile in "${@:-build}"; do
  case $profile in
    build) wanted+=("${build_pkgs[@]}") ;;
    test) wanted+=("${build_pkgs[@]}" "${test_pkgs[@]}") ;;
    bench) wanted+=("${build_pkgs[@]}" "${bench_pkgs[@]}") ;;
    all) wanted+=("${build_pkgs[@]}" "${test_pkgs[@]}" "${bench_pkgs[@]}") ;;
    *) echo "deps.sh: unknown profile '$profile' (build, test, bench, all)" >&2; exit 2 ;;
  esac
done

missing=()
for pkg in $(printf '%s\n' "${wanted[@]}" | sort -u); do
  # Some Node.js builds (NodeSource's) bring npm inside their nodejs package.
  [ "$pkg" = npm ] && command -v npm > /dev/null && continue
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "[deps] installing: ${missing[*]}"
if [ "$(id -u)" != 0 ]; then
  echo "[deps] not root: install these packages yourself (apt-get install --no-install-recommends ...)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# No init system here: keep package scripts from starting daemons on their default ports.
[ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
