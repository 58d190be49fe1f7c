#!/usr/bin/env bash
# Installs what is missing, builds, and evaluates the embedded default model across two ranks
# (tensor parallel) on key retrieval in held-out Python code (configs/tasks/code_passkey.textproto:
# 60 samples, 256 to 1024 tokens, the key at five depths), printing the results table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
model="${TESSERA_DEMO_MODEL:-models/tessera-code-tiny}"
if [ ! -f "$model/config.json" ]; then
  echo "demo: $model is missing; using the random-weight fixture model instead" >&2
  model="tests/fixtures/models/llama2_mha"
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
echo "== mpirun -np 2 tessera eval --config configs/tasks/code_passkey.textproto --model $model --tp 2"
mpirun --oversubscribe -np 2 "${TESSERA_BUILD_DIR:-build}/launcher/tessera" eval \
  --config configs/tasks/code_passkey.textproto --model "$model" --tp 2 \
  --output-dir results/demo
