#!/usr/bin/env bash
# Runs every libFuzzer target of a TESSERA_FUZZ build for a bounded time and reports, per target,
# the executions and the coverage (libFuzzer's final cov: and ft:). Fails when any target finds a
# crash, a leak, a timeout or runs out of memory, printing the input it saved and the command that
# reproduces it.
#
#   tests/fuzz/run_fuzzers.sh BUILD_DIR SECONDS [TARGET ...]
#
# Each target starts from its seed corpus, tests/fuzz/corpus/<target>/ (never modified); inputs
# that add coverage go to BUILD_DIR/fuzz-runs/<target>/corpus, crash inputs and logs to
# BUILD_DIR/fuzz-runs/<target>/. TESSERA_FUZZ_JOBS=N runs N targets at a time (default 1).
set -uo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 BUILD_DIR SECONDS [TARGET ...]" >&2
  exit 2
fi
build=$(cd "$1" && pwd) || exit 2
seconds=$2
shift 2
src=$(cd "$(dirname "$0")/../.." && pwd)
all_targets=(safetensors_header_fuzzer safetensors_index_fuzzer model_config_fuzzer
             prompts_file_fuzzer eval_task_fuzzer run_config_fuzzer set_flag_fuzzer
             threshold_file_fuzzer)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all_targets[@]}")
jobs=${TESSERA_FUZZ_JOBS:-1}
# Seconds one input may take before it counts as a hang; inputs are small, so 10 s is generous
# even on a loaded 2-core machine under ASan.
per_input_timeout=${TESSERA_FUZZ_INPUT_TIMEOUT:-10}

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

for t in "${targets[@]}"; do
  if [ ! -x "$build/tests/fuzz/$t" ]; then
    echo "run_fuzzers: $build/tests/fuzz/$t is missing; build it (cmake -DTESSERA_FUZZ=ON)" >&2
    exit 2
  fi
done

# Runs one target; its log is fuzz-runs/<target>/log.
run_one() {
  local t=$1 out="$build/fuzz-runs/$1"
  rm -rf "$out"
  mkdir -p "$out/corpus"
  (cd "$src" && "$build/tests/fuzz/$t" "$out/corpus" "tests/fuzz/corpus/$t" \
      -max_total_time="$seconds" -timeout="$per_input_timeout" -rss_limit_mb=2048 \
      -max_len=65536 -print_final_stats=1 -artifact_prefix="$out/") > "$out/log" 2>&1
  echo $? > "$out/rc"
}

running=0
for t in "${targets[@]}"; do
  echo "run_fuzzers: $t for ${seconds}s"
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n
    running=$((running - 1))
  fi
done
wait

failed=0
printf '%-28s %12s %8s %8s %8s\n' target executions cov ft corpus
for t in "${targets[@]}"; do
  out="$build/fuzz-runs/$t"
  rc=$(cat "$out/rc" 2>/dev/null || echo 1)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/log" | tail -1)
  # The last status line ("#N  DONE  cov: C ft: F corp: ...", or the last pulse before a crash).
  status=$(grep -E '^#[0-9]+.*cov: [0-9]+ ft: [0-9]+' "$out/log" | tail -1)
  cov=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$status")
  ft=$(sed -n 's/.*ft: \([0-9]*\).*/\1/p' <<<"$status")
  corp=$(sed -n 's/.*corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<<"$status")
  printf '%-28s %12s %8s %8s %8s\n' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}"
  if [ "$rc" -ne 0 ]; then
    failed=1
    echo "  FAILED (exit $rc); log: $out/log"
    grep -E '^==[0-9]+==ERROR|runtime error:|ALARM: working on the last Unit|out-of-memory|SUMMARY:' \
      "$out/log" | head -5 | sed 's/^/    /'
    for a in "$out"/crash-* "$out"/leak-* "$out"/timeout-* "$out"/oom-* "$out"/slow-unit-*; do
      [ -e "$a" ] || continue
      echo "  input:     $a"
      echo "  reproduce: (cd $src && $build/tests/fuzz/$t $a)"
    done
  fi
done
if [ "$failed" -ne 0 ]; then
  echo "run_fuzzers: FAILED; add each input above to tests/fuzz/corpus/<target>/ with its fix" >&2
  exit 1
fi
echo "run_fuzzers: all ${#targets[@]} targets ran ${seconds}s without a finding"
