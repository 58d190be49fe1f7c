#!/usr/bin/env bash
# Installs what is missing, builds, and generates text with a model that ships in the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
model="${TESSERA_DEMO_MODEL:-tests/fixtures/models/llama2_mha}"
echo "== tessera generate --model $model"
"${TESSERA_BUILD_DIR:-build}/launcher/tessera" generate --model "$model" \
  --prompt "def fibonacci(n):" --max-new-tokens 24
