# Shared by the methods' command-line tests (sourced): `launch NP CMD...` runs CMD on NP ranks
# (mpiexec, or directly for one rank) under a 300 s timeout; `check NAME CMD...` counts CMD's
# outcome into $passed / $failed and prints it. Needs $mpiexec, $passed and $failed.
launch() {
  local np="$1"
  shift
  if [ "$np" -gt 1 ]; then
    timeout 300 "$mpiexec" --oversubscribe --allow-run-as-root -np "$np" "$@"
  else
    timeout 300 "$@"
  fi
}

check() {
  local name="$1"
  shift
  if "$@"; then
    echo "ok   $name"
    passed=$((passed + 1))
  else
    echo "FAIL $name"
    failed=$((failed + 1))
  fi
}
