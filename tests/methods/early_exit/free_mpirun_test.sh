#!/usr/bin/env bash
# FREE through `tessera generate` with ranks as processes: at tp 2, pp 2 (the exit inside stage 0
# and on the stage boundary), tp2 x pp2 and dp 2, with --check-rank-agreement, every prompt's
# tokens and early-exit counters equal one rank's; and a bad setting (the preset's exit_layer 8
# on an 8-layer model) ends every rank with an error naming the field, before any weight is read.
#   free_mpirun_test.sh TESSERA_BINARY MPIEXEC
set -u
bin="$1"
mpiexec="$2"
model="models/tessera-code-tiny"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
passed=0
failed=0
cat >"$work/prompts.jsonl" <<'JSONL'
{"prompt": "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"}
{"prompt": "import os\n\nclass "}
{"prompt": "for i in range(10):\n    total = 0\n"}
{"prompt": "    def __init__(self, name):\n        self."}
JSONL

run() {  # output, np, flags...
  local out="$1" np="$2"
  shift 2
  local launch=()
  [ "$np" -gt 1 ] && launch=("$mpiexec" --oversubscribe --allow-run-as-root -np "$np")
  timeout 300 "${launch[@]}" "$bin" generate --model "$model" --prompts "$work/prompts.jsonl" \
    --output "$out" --max-new-tokens 24 --ignore-eos --max-batch 2 --check-rank-agreement \
    --method configs/methods/early_exit.textproto --set method.early_exit.threshold=0.5 "$@" \
    >"$out.log" 2>&1
}

# token_ids and method_counters of every line (timings differ between runs).
same() {
  python3 - "$1" "$2" <<'PY'
import json, sys
def load(p):
    return [(l["token_ids"], l["method_counters"]) for l in map(json.loads, open(p))]
a, b = load(sys.argv[1]), load(sys.argv[2])
exits = sum(c["exits"] for _, c in a)
sys.exit(0 if a == b and exits > 0 else 1)
PY
}

for exit_layer in 2 4; do
  ref="$work/one_$exit_layer.jsonl"
  if ! run "$ref" 1 --set method.early_exit.exit_layer=$exit_layer; then
    echo "FAIL one rank, exit_layer $exit_layer:"; cat "$ref.log"; exit 1
  fi
  for layout in "2 --tp 2" "2 --pp 2" "4 --tp 2 --pp 2" "2 --dp 2"; do
    read -r np flags <<<"$layout"
    out="$work/out.jsonl"
    # shellcheck disable=SC2086
    if run "$out" "$np" $flags --set method.early_exit.exit_layer=$exit_layer && same "$ref" "$out"; then
      echo "ok   exit_layer $exit_layer, $flags: as one rank"
      passed=$((passed + 1))
    else
      echo "FAIL exit_layer $exit_layer, $flags:"; cat "$out.log"
      failed=$((failed + 1))
    fi
  done
done

# The preset's exit_layer (8, for Llama-2-7B's 32 layers) does not fit the 8-layer model.
out="$work/bad.jsonl"
run "$out" 2 --tp 2
code=$?
if [ "$code" -ne 0 ] && [ "$code" -ne 124 ] &&
   grep -q "method.early_exit.exit_layer: is 8 but the model has 8 layers" "$out.log" &&
   ! grep -q "loaded" "$out.log"; then
  echo "ok   exit_layer 8 of 8 layers: exit $code before any weight is read"
  passed=$((passed + 1))
else
  echo "FAIL exit_layer 8: exit $code"; cat "$out.log"
  failed=$((failed + 1))
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
