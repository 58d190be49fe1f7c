#!/usr/bin/env bash
# HARP through `tessera generate` with ranks as processes: at tp 2, pp 2, tp2 x pp2 and dp 2, with
# --check-rank-agreement, greedy and nucleus sampling, every prompt's tokens and HARP counters
# (timings aside) equal one rank's, and some steps reframe; modes SHADOW_LAZY and KV_NOISE at
# tp2 x pp2; and bad settings (delta 1, beta 2, a negative theta, KV_NOISE on a BF16 cache) end
# every rank with an error naming the field.
#   harp_mpirun_test.sh TESSERA_BINARY MPIEXEC
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
    --output "$out" --max-new-tokens 16 --ignore-eos --max-batch 2 --check-rank-agreement \
    --method configs/methods/harp.textproto "$@" >"$out.log" 2>&1
}

# token_ids and the HARP counters of every line (reframe_ms is a timing).
same() {
  python3 - "$1" "$2" <<'PY'
import json, sys
def load(p):
    out = []
    for line in map(json.loads, open(p)):
        c = dict(line["method_counters"])
        c.pop("reframe_ms", None)
        # a sum of floats that change in the last bits with the layout
        c["entropy_bits_sum"] = round(c["entropy_bits_sum"], 3)
        out.append((line["token_ids"], c))
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
reframed = sum(c.get("reframed_passes", 0) for _, c in a)
sys.exit(0 if a == b and reframed > 0 else 1)
PY
}

for sampling in "--temperature 0" "--temperature 0.8 --top-p 0.9 --seed 5"; do
  ref="$work/one.jsonl"
  # shellcheck disable=SC2086
  if ! run "$ref" 1 $sampling; then
    echo "FAIL one rank, $sampling:"; cat "$ref.log"; exit 1
  fi
  for layout in "2 --tp 2" "2 --pp 2" "4 --tp 2 --pp 2" "2 --dp 2"; do
    read -r np flags <<<"$layout"
    out="$work/out.jsonl"
    # shellcheck disable=SC2086
    if run "$out" "$np" $flags $sampling && same "$ref" "$out"; then
      echo "ok   $flags, $sampling: as one rank"
      passed=$((passed + 1))
    else
      echo "FAIL $flags, $sampling:"; cat "$out.log"
      failed=$((failed + 1))
    fi
  done
done

# The experimental modes: SHADOW_LAZY's cache and KV_NOISE's masked copies sharded like the
# real cache.
for mode in SHADOW_LAZY KV_NOISE; do
  ref="$work/one_$mode.jsonl"
  out="$work/out_$mode.jsonl"
  if run "$ref" 1 --set method.harp.mode=$mode &&
     run "$out" 4 --tp 2 --pp 2 --set method.harp.mode=$mode && same "$ref" "$out"; then
    echo "ok   $mode, --tp 2 --pp 2: as one rank"
    passed=$((passed + 1))
  else
    echo "FAIL $mode, --tp 2 --pp 2:"; cat "$ref.log" "$out.log"
    failed=$((failed + 1))
  fi
done

for bad in "method.harp.delta=1|method.harp.delta: must be" \
           "method.harp.beta_vanilla=2|method.harp.beta_vanilla: must be" \
           "method.harp.theta_bits=-1|method.harp.theta_bits: must be" \
           "method.harp.mode=KV_NOISE --kv-dtype bf16|method.harp.mode: KV_NOISE masks a copy"; do
  setting="${bad%%|*}"
  message="${bad#*|}"
  out="$work/bad.jsonl"
  # shellcheck disable=SC2086
  run "$out" 2 --tp 2 --set $setting
  code=$?
  ranks=$(grep -c "$message" "$out.log")
  if [ "$code" -ne 0 ] && [ "$code" -ne 124 ] && [ "$ranks" -ge 1 ]; then
    echo "ok   $setting: exit $code, \"$message\""
    passed=$((passed + 1))
  else
    echo "FAIL $setting: exit $code"; cat "$out.log"
    failed=$((failed + 1))
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
