#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU: builds Tessera with the CUDA backend, runs the
# CPU-vs-CUDA parity suite and the whole-model tests on the GPU (logits and greedy tokens
# against transformers, decode steps replayed as CUDA graphs) and prints their summaries,
# measures the device's limits, then benchmarks
# decode on a 7B-shaped random BF16 checkpoint and prints the decode time per token against the
# floor weight bytes / measured device bandwidth.
#
#   scripts/gpu_check.sh
#
# Environment: TESSERA_BUILD_DIR (default build-gpu), TESSERA_BENCH_MODEL (default
# bench-models/llama-7b, made with tools/make_random_checkpoint.py when missing: 13.5 GB),
# TESSERA_CMAKE_ARGS (extra cmake arguments, e.g. "-DTESSERA_MPI=OFF"), BENCH_ARGS (extra
# `tessera bench` flags). Exits non-zero when the parity suite, a whole-model GPU test or the
# benchmark fails.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${TESSERA_BUILD_DIR:-build-gpu}"
model="${TESSERA_BENCH_MODEL:-bench-models/llama-7b}"

if ! nvidia-smi -L; then
  echo "gpu_check: no NVIDIA GPU is visible (nvidia-smi failed); run this on a GPU machine" >&2
  exit 1
fi

echo "== build ($build)"
# shellcheck disable=SC2086
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTESSERA_CUDA=ON ${TESSERA_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j "$(nproc)" --target backend_parity_test golden_transformers_test \
  decode_graphs_test tessera tessera_cuda_probe

echo "== parity suite (CUDA vs CPU)"
set +e
"$build/tests/kernels/backend_parity_test" >"$build/parity.log" 2>&1
parity_rc=$?
set -e
grep -E '^\[parity\]|^\[  (FAILED|PASSED|SKIPPED) ' "$build/parity.log" || true
grep -B2 -A8 'Failure' "$build/parity.log" | head -80 || true
echo "parity suite exit status: $parity_rc (full log: $build/parity.log)"

echo "== whole-model tests on the GPU (run from the repository root: fixtures are relative)"
set +e
"$build/tests/golden/golden_transformers_test" --gtest_filter='*_cuda' \
  >"$build/golden_cuda.log" 2>&1
golden_rc=$?
"$build/tests/runtime/decode_graphs_test" >"$build/decode_graphs.log" 2>&1
graphs_rc=$?
set -e
grep -E '^\[  (FAILED|PASSED|SKIPPED) ' "$build/golden_cuda.log" "$build/decode_graphs.log" || true
grep -h -B2 -A8 'Failure' "$build/golden_cuda.log" "$build/decode_graphs.log" | head -80 || true
echo "golden (GPU) exit status: $golden_rc, CUDA graphs exit status: $graphs_rc"
if [ "$parity_rc" -eq 0 ]; then parity_rc=$((golden_rc | graphs_rc)); fi

echo "== device limits"
probe="$("$build/kernels/cuda/tessera_cuda_probe" 128 11008 4096)"
echo "$probe"

if [ ! -f "$model/model.safetensors" ]; then
  echo "== making $model (random BF16 weights, 7B shapes)"
  python3 tools/make_random_checkpoint.py --hidden 4096 --intermediate 11008 --layers 32 \
    --heads 32 --kv-heads 32 --vocab 32000 --dtype bf16 --out "$model"
fi

echo "== tessera bench --backend cuda (eager, then with decode steps replayed as CUDA graphs)"
# shellcheck disable=SC2086
bench="$("$build/launcher/tessera" bench --backend cuda --model "$model" --prompt-tokens 128 \
  --decode-tokens 64 ${BENCH_ARGS:-})"
echo "$bench"
# shellcheck disable=SC2086
graphs="$("$build/launcher/tessera" bench --backend cuda --cuda-graphs --model "$model" \
  --prompt-tokens 128 --decode-tokens 64 ${BENCH_ARGS:-})"
echo "$graphs" | grep -E '"decode_ms_per_token"' | sed 's/^/with CUDA graphs: /'

python3 - "$probe" "$bench" <<'EOF'
import json
import sys

probe = json.loads(sys.argv[1])
bench = json.loads(sys.argv[2][sys.argv[2].index("{"):])
bandwidth = probe["device_read_bandwidth_bytes_per_s"]
step_bytes = bench["decode_weight_bytes_per_token_rank0"]
ms = bench["decode_ms_per_token"]
floor_ms = step_bytes / bandwidth * 1e3
print(f"decode: {ms:.2f} ms/token; floor {step_bytes / 1e9:.2f} GB of weights / "
      f"{bandwidth / 1e12:.2f} TB/s device read bandwidth = {floor_ms:.2f} ms/token; "
      f"decode runs at {floor_ms / ms:.0%} of the bandwidth floor")
prefill = bench["prefill_linear_gflops"] * 1e9
gemm = probe["cublas_bf16_gemm_flops"]
print(f"prefill: {bench['prefill_tokens_per_s']:.0f} tokens/s, linear layers at "
      f"{prefill / 1e12:.2f} TFLOP/s = {prefill / gemm:.0%} of cuBLAS BF16 GEMM "
      f"({gemm / 1e12:.1f} TFLOP/s on {probe['gemm_shape']})")
EOF
exit "$parity_rc"
