#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite. This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
cd "${TESSERA_BUILD_DIR:-build}"
ctest --output-on-failure -j "$(nproc)"
