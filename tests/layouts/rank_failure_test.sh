#!/usr/bin/env bash
# A failure on one rank ends the whole job: every rank exits non-zero, within a bounded time, and
# the cause is printed once. Stage 1 of a pp=2 job needs the shard holding lm_head; stage 0 does
# not. Cases: that shard missing, and that shard's header corrupt.
#   rank_failure_test.sh TESSERA_BINARY MPIEXEC
set -u
bin="$1"
mpiexec="$2"
src="tests/fixtures/models/llama2_mha"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

check() {  # name, model dir, expected text
  local name="$1" dir="$2" expected="$3" start end out code count
  start=$(date +%s)
  out="$(timeout 120 "$mpiexec" --oversubscribe --allow-run-as-root -np 2 "$bin" generate \
    --model "$dir" --prompt "def f(x):" --max-new-tokens 4 --pp 2 --comm-timeout-s 20 2>&1)"
  code=$?
  end=$(date +%s)
  count=$(grep -c "tessera: error" <<<"$out")
  if [ "$code" -ne 0 ] && [ "$code" -ne 124 ] && [ "$count" -eq 1 ] &&
     grep -q "\[rank 1 tp0 pp1 dp0\] tessera: error: .*$expected" <<<"$out"; then
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
check "missing shard on stage 1" "$work/missing" "model-00002-of-00002.safetensors"

cp -r "$src" "$work/corrupt"
printf '\xff\xff\xff\xff\xff\xff\xff\x7f' | dd of="$work/corrupt/model-00002-of-00002.safetensors" \
  conv=notrunc status=none
check "corrupt shard header on stage 1" "$work/corrupt" "header length"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
