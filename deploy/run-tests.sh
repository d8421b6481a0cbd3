#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds, and runs every test (unit and
# integration, with a real nats-server on random loopback ports). ctest -L unit or
# -L integration runs one label alone.
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/install-deps.sh
./deploy/build.sh
BUILD_DIR=${CHASQUI_BUILD_DIR:-build}
ctest --test-dir "$BUILD_DIR" -j2 --output-on-failure --timeout 300 "$@"
