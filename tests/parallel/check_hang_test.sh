#!/usr/bin/env bash
# Runs the MPI hang test (rank 1 skips a collective) and checks that the job fails the right way:
# a non-zero exit, rank 0's DeadlineExceeded message exactly once, and within MAX_SECONDS.
#   check_hang_test.sh MAX_SECONDS mpiexec [mpiexec args...] binary --hang-test
set -u
max_seconds=$1
shift
output=$(mktemp)
trap 'rm -f "$output"' EXIT
start=$(date +%s.%N)
# The outer timeout is a backstop only; ctest's TIMEOUT is the other.
timeout --kill-after=5 $((max_seconds * 2)) "$@" >"$output" 2>&1
rc=$?
elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
cat "$output"
echo "---- check_hang_test: exit code $rc after ${elapsed}s"
fail=0
if [ "$rc" -eq 0 ]; then
  echo "FAIL: the job exited 0; a rank that timed out must make the job fail"; fail=1
fi
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
  echo "FAIL: the job hung and was killed by timeout"; fail=1
fi
count=$(grep -c "DEADLINE_EXCEEDED: world rank 0/.*AllReduce timed out" "$output")
if [ "$count" -ne 1 ]; then
  echo "FAIL: expected rank 0's DeadlineExceeded message once, found it $count times"; fail=1
fi
if awk -v e="$elapsed" -v m="$max_seconds" 'BEGIN { exit !(e > m) }'; then
  echo "FAIL: the job took ${elapsed}s, more than ${max_seconds}s"; fail=1
fi
[ "$fail" -eq 0 ] && echo "PASS"
exit "$fail"
