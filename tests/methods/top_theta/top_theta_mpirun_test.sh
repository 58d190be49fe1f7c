#!/usr/bin/env bash
# Top-theta and Top-k through the `tessera` binary with ranks as processes:
# - `tessera calibrate` at tp2 x pp2 and dp 2 writes one rank's th.txt: the same bins and
#   sample counts, 99 % of the values within 1e-5 (1 + |v|) and all within 2e-3 (1 + |v|) (the
#   residual stream is summed in another order, a replica's smaller batch is rounded otherwise
#   by OpenBLAS's kernel for the CPU, and top-k at calibration amplifies that in the deepest
#   layers: up to 1.4e-3 measured in last-layer bins of 2-3 samples on an AVX2 machine, on the
#   runtime before and after the GEMV kernels per instruction set alike);
# - `tessera eval` (rolling perplexity, and next-line generation for the decode counters) with
#   those thresholds at tp 2, pp 2, tp2 x pp2 and dp 2 gives one rank's metrics and counters,
#   and so does the thresholds.safetensors archive alone;
# - bad input ends every rank with an error naming the file or field: a threshold file for
#   another model (9 heads), a truncated file, k that differs from the file's, k = 0,
#   post-softmax with SDC, calibration samples shorter than k.
#   top_theta_mpirun_test.sh TESSERA_BINARY MPIEXEC
set -u
bin="$1"
mpiexec="$2"
model="models/tessera-code-tiny"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
passed=0
failed=0
method=(--method configs/methods/sparse_attention.textproto --set method.sparse_attention.k=32
        --set method.sparse_attention.sdc=SDC_EXACT --set method.sparse_attention.vmc=true)

launch() {  # np, then the command
  local np="$1"
  shift
  if [ "$np" -gt 1 ]; then
    timeout 300 "$mpiexec" --oversubscribe --allow-run-as-root -np "$np" "$@"
  else
    timeout 300 "$@"
  fi
}

check() {  # name, status
  if [ "$2" -eq 0 ]; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "FAIL: $1"
  fi
}

calibrate() {  # out dir, np, layout flags...
  local dir="$1" np="$2"
  shift 2
  launch "$np" "$bin" calibrate --model "$model" "${method[@]}" "$@" \
    --data configs/tasks/data/code_calibration.jsonl --limit 8 --calib-tac \
    --calib-add-sigma 0.1 --output-dir "$dir" >"$dir.log" 2>&1
}

same_bins() {
  python3 - "$1/th.txt" "$2/th.txt" <<'PY'
import sys
def load(p):
    out = {}
    for line in open(p):
        key, value, samples, k = line.split()
        out[key] = (float(value), int(samples), int(k))
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
if a.keys() != b.keys():
    sys.exit(f"bins differ: {len(a)} vs {len(b)}")
close = 0
for key in a:
    (va, sa, ka), (vb, sb, kb) = a[key], b[key]
    if sa != sb or ka != kb or abs(va - vb) > 2e-3 * (1 + abs(va)):
        sys.exit(f"{key}: {a[key]} vs {b[key]}")
    close += abs(va - vb) <= 1e-5 * (1 + abs(va))
if close < 0.99 * len(a):
    sys.exit(f"only {close} of {len(a)} bins within 1e-5")
PY
}

calibrate "$work/cal1" 1
check "calibrate on one rank: $(tail -2 "$work/cal1.log")" $?
for layout in "4 --tp 2 --pp 2" "2 --dp 2"; do
  read -r np flags <<<"$layout"
  # shellcheck disable=SC2086
  calibrate "$work/cal$np" "$np" $flags
  check "calibrate $flags: $(tail -2 "$work/cal$np.log")" $?
  same_bins "$work/cal1" "$work/cal$np"
  check "calibrate $flags: th.txt differs from one rank's" $?
done

evaluate() {  # out dir, np, task config, extra flags...
  local dir="$1" np="$2" task="$3"
  shift 3
  launch "$np" "$bin" eval --config "$task" "${method[@]}" \
    --set "method.sparse_attention.calibration_dir=$work/cal1" --limit 4 --output-dir "$dir" \
    "$@" >"$dir.log" 2>&1
}

same_results() {
  python3 - "$1" "$2" <<'PY'
import glob, json, sys
def load(d):
    r = json.load(open(sorted(glob.glob(d + "/results_*.json"))[-1]))
    task = next(iter(r["results"].values()))
    metrics = {k: v for k, v in task.items() if isinstance(v, float)}
    return metrics, r["compute"]["method"]["sparse_attention"]
(ma, ca), (mb, cb) = load(sys.argv[1]), load(sys.argv[2])
for k in ma:
    if abs(ma[k] - mb[k]) > 1e-4 * (1 + abs(ma[k])):
        sys.exit(f"{k}: {ma[k]} vs {mb[k]}")
for phase in ("elements_prefill", "vrows_prefill", "elements_decode", "vrows_decode"):
    a, b = ca[phase], cb[phase]
    if a["visible"] != b["visible"] or abs(a["kept"] - b["kept"]) > 1e-4 * a["visible"]:
        sys.exit(f"{phase}: {a} vs {b}")
if ca["elements_prefill"]["fraction"] >= 0.9:
    sys.exit(f"nothing was sparsified: {ca['elements_prefill']}")
if "generation" in sys.argv[1] and ca["vrows_decode"]["visible"] == 0:
    sys.exit("no decode rows were counted")
PY
}

for task in code_files_perplexity code_next_line_generation; do
  evaluate "$work/$task.1" 1 "configs/tasks/$task.textproto"
  check "eval $task on one rank: $(tail -3 "$work/$task.1.log")" $?
  for layout in "2 --tp 2" "2 --pp 2" "4 --tp 2 --pp 2" "2 --dp 2"; do
    read -r np flags <<<"$layout"
    out="$work/$task.$np.${flags// /}"
    # shellcheck disable=SC2086
    evaluate "$out" "$np" "configs/tasks/$task.textproto" $flags
    check "eval $task $flags: $(tail -3 "$out.log")" $?
    same_results "$work/$task.1" "$out"
    check "eval $task $flags differs from one rank" $?
  done
done

# The binary archive calibrate writes beside th.txt gives the same run.
mkdir -p "$work/archive"
cp "$work/cal1/thresholds.safetensors" "$work/archive/"
evaluate "$work/archive.out" 2 configs/tasks/code_files_perplexity.textproto --tp 2 \
  --set "method.sparse_attention.calibration_dir=$work/archive"
check "eval from thresholds.safetensors: $(tail -3 "$work/archive.out.log")" $?
same_results "$work/code_files_perplexity.1" "$work/archive.out"
check "eval from thresholds.safetensors differs from th.txt" $?

# Bad input: every rank ends non-zero, and the message names the file or field.
expect_error() {  # name, expected text, np, command...
  local name="$1" text="$2" np="$3"
  shift 3
  launch "$np" "$@" >"$work/bad.log" 2>&1
  local code=$?
  if [ "$code" -ne 0 ] && [ "$code" -ne 124 ] && grep -q -- "$text" "$work/bad.log"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "FAIL: $name (exit $code; expected \"$text\"):"
    cat "$work/bad.log"
  fi
}
bad_eval=("$bin" eval --config configs/tasks/code_files_perplexity.textproto --limit 1 --tp 2
          --output-dir "$work/bad")
mkdir -p "$work/other" "$work/truncated"
sed 's/^L0_H0:/L0_H9:/' "$work/cal1/th.txt" >"$work/other/th.txt"
head -c 5000 "$work/cal1/th.txt" >"$work/truncated/th.txt"
expect_error "another model's file" "$work/other/th.txt: bin L0_H9" 2 "${bad_eval[@]}" \
  "${method[@]}" --set "method.sparse_attention.calibration_dir=$work/other"
expect_error "a truncated file" "$work/truncated/th.txt:" 2 "${bad_eval[@]}" "${method[@]}" \
  --set "method.sparse_attention.calibration_dir=$work/truncated"
expect_error "k differs from the file's" "calibrated for k = 32, but this run's k for it is 16" 2 \
  "${bad_eval[@]}" "${method[@]}" --set method.sparse_attention.k=16 \
  --set "method.sparse_attention.calibration_dir=$work/cal1"
expect_error "k = 0" "method.sparse_attention.k" 2 "${bad_eval[@]}" "${method[@]}" \
  --set method.sparse_attention.k=0 --set "method.sparse_attention.calibration_dir=$work/cal1"
expect_error "post-softmax with SDC" "method.sparse_attention.sdc" 2 "${bad_eval[@]}" \
  "${method[@]}" --set method.sparse_attention.placement=POST_SOFTMAX \
  --set "method.sparse_attention.calibration_dir=$work/cal1"
printf '{"text": "import os\\n"}\n{"text": "x = 1\\n"}\n' >"$work/short.jsonl"
expect_error "calibration samples shorter than k" "recorded no row" 2 "$bin" calibrate \
  --model "$model" "${method[@]}" --data "$work/short.jsonl" --tp 2 --output-dir "$work/short"

echo "top_theta_mpirun: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
