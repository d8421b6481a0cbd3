#!/usr/bin/env bash
# Configures and builds Chasqui into ./build (override with CHASQUI_BUILD_DIR). 2 cores: -j2.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${CHASQUI_BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build "$BUILD_DIR" -j"${CHASQUI_JOBS:-2}"
