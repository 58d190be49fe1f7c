#!/usr/bin/env bash
# A failure on one rank ends the whole job: every rank exits non-zero, within a bounded time, and
# the cause is printed once. Stage 1 of a pp=2 job needs the shard holding lm_head; stage 0 does
# not. Cases: that shard's header corrupt (only stage 1 reads it, so only rank 1 fails); that shard
# missing (every rank refuses the index that names it when opening the checkpoint: printed once,
# by rank 0); and, on a machine without a GPU, --backend cuda (every rank fails the same way:
# printed once, by rank 0).
#   rank_failure_test.sh TESSERA_BINARY MPIEXEC
set -u
bin="$1"
mpiexec="$2"
src="tests/fixtures/models/llama2_mha"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

check() {  # name, model dir, expected text[, printing rank's prefix[, extra flags]]
  local name="$1" dir="$2" expected="$3" prefix="${4:-rank 1 tp0 pp1 dp0}" extra="${5:-}"
  local start end out code count
  start=$(date +%s)
  # shellcheck disable=SC2086
  out="$(timeout 120 "$mpiexec" --oversubscribe --allow-run-as-root -np 2 "$bin" generate \
    --model "$dir" --prompt "def f(x):" --max-new-tokens 4 --pp 2 --comm-timeout-s 20 $extra 2>&1)"
  code=$?
  end=$(date +%s)
  count=$(grep -c "tessera: error" <<<"$out")
  if [ "$code" -ne 0 ] && [ "$code" -ne 124 ] && [ "$count" -eq 1 ] &&
     grep -q "\[$prefix\] tessera: error: .*$expected" <<<"$out"; then
    echo "ok   $name: exit $code after $((end - start)) s, cause printed once"
    passed=$((passed + 1))
  else
    echo "FAIL $name: exit $code after $((end - start)) s, $count error lines; output:"
    echo "$out"
    failed=$((failed + 1))
  fi
}

cp -r "$src" "$work/missing"
rm "$work/missing/model-00002-of-00002.safetensors"
check "missing shard on stage 1" "$work/missing" "model-00002-of-00002.safetensors" \
  "rank 0 tp0 pp0 dp0"

cp -r "$src" "$work/corrupt"
printf '\xff\xff\xff\xff\xff\xff\xff\x7f' | dd of="$work/corrupt/model-00002-of-00002.safetensors" \
  conv=notrunc status=none
check "corrupt shard header on stage 1" "$work/corrupt" "header length"

if ! nvidia-smi -L >/dev/null 2>&1; then
  # "no CUDA device" in a CUDA build, "built without CUDA" otherwise
  check "--backend cuda without a GPU" "$src" "CUDA" "rank 0 tp0 pp0 dp0" "--backend cuda"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
