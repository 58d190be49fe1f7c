#!/usr/bin/env bash
# Installs what is missing (Debian packages; lm-evaluation-harness from PyPI into
# build/lm_eval_venv), builds, and runs the whole test suite, then each fuzz target for a
# short time (scripts/fuzz.sh; TESSERA_FUZZ_SECONDS per target, default 25, 0 skips it). This is
# what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
bash scripts/install_lm_eval.sh  # for the lm_eval_local_completions test
(cd "${TESSERA_BUILD_DIR:-build}" && ctest --output-on-failure -j "$(nproc)")
fuzz_seconds="${TESSERA_FUZZ_SECONDS:-25}"
if [ "$fuzz_seconds" -gt 0 ]; then
  bash scripts/fuzz.sh "$fuzz_seconds"
fi
