#!/usr/bin/env bash
# Installs the Debian 12 packages Chasqui builds, tests and runs with. Idempotent: installs
# only what is missing, and runs apt-get update only then. Needs root (or sudo).
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config
  protobuf-compiler libprotobuf-dev
  libnats-dev nats-server
  libsodium-dev libcrypt-dev libssl-dev
  librocksdb-dev
  prometheus-cpp-dev
  libabsl-dev
  libcpp-httplib-dev
  libcli11-dev nlohmann-json3-dev libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  curl ca-certificates python3 openssl
  tzdata
  prometheus
  wrk nginx-light
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"

# Debian's prometheus package starts a system-wide server on :9090 where systemd runs; the
# backbone's tests start their own on a free loopback port, so one we just installed is stopped.
# Likewise nginx (benchmarks/http_load starts its own on free ports) on :80.
for service in prometheus nginx; do
  pkg=$service
  [ "$service" = nginx ] && pkg=nginx-light
  if [[ " ${missing[*]} " == *" $pkg "* ]] && command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable --now "$service" >/dev/null 2>&1 || true
  fi
done
