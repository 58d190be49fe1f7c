#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU, sized to finish within 10 minutes on one GPU:
# builds Tessera with the CUDA backend, runs the CPU-vs-CUDA parity suite, the whole-model
# tests on the GPU (logits and greedy tokens against transformers; decode steps replayed as
# CUDA graphs, also after scratch grew under them), the graph, attention and GEMM tests again
# under compute-sanitizer's memcheck, measures the device's limits, benchmarks decode on a
# 7B-shaped random BF16 checkpoint (8 of its 32 layers: the same per-layer shapes, a quarter of
# the bytes) against the floor weight bytes / measured device bandwidth, and prints one summary
# line per step at the end.
#
#   scripts/gpu_check.sh
#
# Environment: TESSERA_BUILD_DIR (default build-gpu), TESSERA_BENCH_MODEL (default
# bench-models/llama-7b-8l, made with tools/make_random_checkpoint.py when missing: 3.5 GB),
# TESSERA_CMAKE_ARGS (extra cmake arguments, e.g. "-DTESSERA_MPI=OFF"), BENCH_ARGS (extra
# `tessera bench` flags), TESSERA_SANITIZE=0 to skip the compute-sanitizer step. The build
# needs the packages of scripts/install_deps.sh. Exits non-zero when any step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${TESSERA_BUILD_DIR:-build-gpu}"
model="${TESSERA_BENCH_MODEL:-bench-models/llama-7b-8l}"
summary=()
failed=0
# step NAME RC: one summary line.
step() {
  if [ "$2" -eq 0 ]; then summary+=("ok     $1"); else summary+=("FAILED $1 (exit $2)"); failed=1; fi
}
finish() {
  echo "== summary (${SECONDS} s)"
  printf '%s\n' "${summary[@]}"
  exit "$failed"
}
# run LOG CMD...: runs CMD with its output in LOG, and returns its exit status.
run() {
  local log="$1"
  shift
  set +e
  "$@" >"$log" 2>&1
  local rc=$?
  set -e
  return "$rc"
}

if ! nvidia-smi -L; then
  echo "gpu_check: no NVIDIA GPU is visible (nvidia-smi failed); run this on a GPU machine" >&2
  exit 1
fi

echo "== build ($build)"
rc=0
# shellcheck disable=SC2086
run "$build-configure.log" cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTESSERA_CUDA=ON \
  ${TESSERA_CMAKE_ARGS:-} || rc=$?
if [ "$rc" -eq 0 ]; then
  run "$build-build.log" cmake --build "$build" -j "$(nproc)" --target backend_parity_test \
    golden_transformers_test decode_graphs_test tessera tessera_cuda_probe || rc=$?
fi
step "build ($build-configure.log, $build-build.log)" "$rc"
if [ "$rc" -ne 0 ]; then
  tail -30 "$build-configure.log" "$build-build.log" 2>/dev/null || true
  finish
fi

echo "== parity suite (CUDA vs CPU)"
rc=0
run "$build/parity.log" "$build/tests/kernels/backend_parity_test" || rc=$?
if grep -q '^\[parity\] SKIPPED' "$build/parity.log" && [ "$rc" -eq 0 ]; then rc=2; fi
grep -E '^\[parity\]|^\[  (FAILED|PASSED|SKIPPED) ' "$build/parity.log" || true
grep -B2 -A8 'Failure' "$build/parity.log" | head -80 || true
step "parity suite: $(grep -E '^\[parity\] [0-9]+ comparisons' "$build/parity.log" || echo 'no summary') ($build/parity.log)" "$rc"

echo "== whole-model tests on the GPU (run from the repository root: fixtures are relative)"
rc=0
run "$build/golden_cuda.log" "$build/tests/golden/golden_transformers_test" \
  --gtest_filter='*_cuda' || rc=$?
if grep -q "no CUDA" "$build/golden_cuda.log" && [ "$rc" -eq 0 ]; then rc=2; fi
step "golden tests on the GPU ($build/golden_cuda.log)" "$rc"
rc=0
run "$build/decode_graphs.log" "$build/tests/runtime/decode_graphs_test" || rc=$?
# Tests that skipped did not use the GPU: a failure here.
if grep -q "no CUDA backend" "$build/decode_graphs.log" && [ "$rc" -eq 0 ]; then rc=2; fi
step "CUDA graph tests ($build/decode_graphs.log)" "$rc"
grep -E '^\[  (FAILED|PASSED|SKIPPED) ' "$build/golden_cuda.log" "$build/decode_graphs.log" || true
grep -h -B2 -A8 'Failure' "$build/golden_cuda.log" "$build/decode_graphs.log" | head -80 || true

echo "== HARP on the GPU: the CPU's hesitations and tokens (greedy, embedded model)"
rc=0
harp_prompts="$build/harp_prompts.jsonl"
printf '%s\n' '{"prompt": "import os\n\nclass "}' \
  '{"prompt": "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"}' \
  >"$harp_prompts"
for b in cpu cuda; do
  run "$build/harp_$b.log" "$build/launcher/tessera" generate --backend "$b" \
    --model models/tessera-code-tiny --prompts "$harp_prompts" --output "$build/harp_$b.jsonl" \
    --max-new-tokens 16 --ignore-eos --method configs/methods/harp.textproto || rc=$?
done
if [ "$rc" -eq 0 ]; then
  python3 - "$build/harp_cpu.jsonl" "$build/harp_cuda.jsonl" <<'PY' || rc=$?
import json, sys
def load(p):
    return [(l["token_ids"], l["method_counters"]["hesitations"]) for l in map(json.loads, open(p))]
cpu, gpu = load(sys.argv[1]), load(sys.argv[2])
print("cpu", cpu, "\ncuda", gpu)
sys.exit(0 if cpu == gpu else 1)
PY
fi
step "HARP generate, CUDA = CPU ($build/harp_cuda.log)" "$rc"

if [ "${TESSERA_SANITIZE:-1}" != 0 ]; then
  echo "== compute-sanitizer memcheck: CUDA graphs (model and parity), attention, GEMM"
  PATH="$PATH:${CUDA_HOME:-/usr/local/cuda}/bin"
  if command -v compute-sanitizer >/dev/null; then
    rc=0
    run "$build/memcheck_graphs.log" compute-sanitizer --tool memcheck --error-exitcode 86 \
      "$build/tests/runtime/decode_graphs_test" --gtest_filter='*Cuda*:*ReplayedSteps*' || rc=$?
    step "memcheck, graph tests ($build/memcheck_graphs.log)" "$rc"
    rc=0
    run "$build/memcheck_parity.log" compute-sanitizer --tool memcheck --error-exitcode 86 \
      "$build/tests/kernels/backend_parity_test" \
      --gtest_filter='*Attention*:*GraphReplay*:*Gemm*:*TopK*:*Lerp*' || rc=$?
    step "memcheck, parity attention/GEMM/top-k/graph/HARP ops ($build/memcheck_parity.log)" "$rc"
    grep -h "ERROR SUMMARY" "$build/memcheck_graphs.log" "$build/memcheck_parity.log" || true
  else
    step "memcheck (compute-sanitizer is not on PATH)" 1
  fi
fi

echo "== device limits"
rc=0
probe="$("$build/kernels/cuda/tessera_cuda_probe" 128 11008 4096)" || rc=$?
echo "$probe"
step "device probe" "$rc"
[ "$rc" -eq 0 ] || finish

if [ ! -f "$model/model.safetensors" ]; then
  echo "== making $model (random BF16 weights, 7B layer shapes, 8 layers)"
  python3 tools/make_random_checkpoint.py --hidden 4096 --intermediate 11008 --layers 8 \
    --heads 32 --kv-heads 32 --vocab 32000 --dtype bf16 --out "$model"
fi

echo "== tessera bench --backend cuda (eager, then with decode steps replayed as CUDA graphs)"
rc=0
# shellcheck disable=SC2086
bench="$("$build/launcher/tessera" bench --backend cuda --model "$model" --prompt-tokens 128 \
  --decode-tokens 64 ${BENCH_ARGS:-})" || rc=$?
echo "$bench"
step "bench (eager)" "$rc"
rc=0
# shellcheck disable=SC2086
graphs="$("$build/launcher/tessera" bench --backend cuda --cuda-graphs --model "$model" \
  --prompt-tokens 128 --decode-tokens 64 ${BENCH_ARGS:-})" || rc=$?
echo "$graphs" | grep -E '"decode_ms_per_token"' | sed 's/^/with CUDA graphs: /' || true
step "bench (CUDA graphs)" "$rc"

figures="$(python3 - "$probe" "$bench" "$graphs" <<'EOF' || true
import json
import sys


def last_json(text):
    return json.loads(text[text.index("{"):])


probe = json.loads(sys.argv[1])
bench = last_json(sys.argv[2])
bandwidth = probe["device_read_bandwidth_bytes_per_s"]
step_bytes = bench["decode_weight_bytes_per_token_rank0"]
ms = bench["decode_ms_per_token"]
floor_ms = step_bytes / bandwidth * 1e3
line = (f"decode {ms:.2f} ms/token = {floor_ms / ms:.0%} of the bandwidth floor "
        f"({step_bytes / 1e9:.2f} GB / {bandwidth / 1e12:.2f} TB/s = {floor_ms:.2f} ms)")
try:
    replayed = last_json(sys.argv[3])["decode_ms_per_token"]
    line += f"; with CUDA graphs {replayed:.2f} ms/token = {floor_ms / replayed:.0%}"
except (ValueError, KeyError):
    pass
prefill = bench["prefill_linear_gflops"] * 1e9
gemm = probe["cublas_bf16_gemm_flops"]
line += (f"; prefill {bench['prefill_tokens_per_s']:.0f} tokens/s, linear layers at "
         f"{prefill / 1e12:.2f} TFLOP/s = {prefill / gemm:.0%} of cuBLAS BF16 GEMM "
         f"({gemm / 1e12:.1f} TFLOP/s on {probe['gemm_shape']})")
print(line)
EOF
)"
echo "$figures"
[ -z "$figures" ] || summary+=("       $figures")
finish
