#!/usr/bin/env bash
# Installs lm-evaluation-harness (its OpenAI-compatible API client, no torch) into a virtual
# environment for the lm_eval_local_completions test: scripts/install_lm_eval.sh [VENV_DIR]
# (default build/lm_eval_venv). Idempotent: an environment that already has the pinned version
# is kept. The packages come from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-${TESSERA_BUILD_DIR:-build}/lm_eval_venv}"
version="0.4.13"
if [ -x "$venv/bin/lm_eval" ] &&
   "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('lm_eval') != '$version')" 2>/dev/null; then
  echo "install_lm_eval: lm_eval $version present in $venv"
  exit 0
fi
python3 -m venv "$venv"
# lm_eval[api] brings aiohttp, requests and tenacity for local-completions; nothing else is needed
# with tokenizer_backend=remote (the server's /tokenize).
"$venv/bin/pip" install --quiet --no-compile "lm_eval[api]==$version"
echo "install_lm_eval: lm_eval $version installed in $venv"
