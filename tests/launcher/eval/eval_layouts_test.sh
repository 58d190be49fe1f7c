#!/usr/bin/env bash
# The same evaluation at tp=1, tp=2, pp=2 and dp=2 gives the same results (apart from timings):
# metrics and per-sample records agree to 1e-6 relative, generated tokens exactly.
#   eval_layouts_test.sh TESSERA_BINARY MPIEXEC
set -u
bin="$1"
mpiexec="$2"
model="tests/fixtures/models/llama2_mha"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=0
passed=0

run() {  # name, ranks, layout flags..., then task flags after --
  local name="$1" np="$2"
  shift 2
  local out="$work/$name"
  if [ "$np" -eq 1 ]; then
    "$bin" eval --model "$model" --output-dir "$out" "$@" >/dev/null 2>"$out.log"
  else
    "$mpiexec" --oversubscribe --allow-run-as-root -np "$np" "$bin" eval --model "$model" \
      --output-dir "$out" "$@" >/dev/null 2>"$out.log"
  fi || { echo "FAIL $name: exit $?"; cat "$out.log"; return 1; }
}

compare() {  # reference dir, other dir
  python3 - "$1" "$2" <<'PY'
import glob, json, math, sys

def load(d):
    results = json.load(open(glob.glob(d + "/results_*.json")[0]))
    samples = [json.loads(l) for l in open(glob.glob(d + "/samples_*.jsonl")[0])]
    return results["results"], samples

def close(a, b, path):
    if isinstance(a, float) or isinstance(b, float):
        if not math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6):
            raise AssertionError(f"{path}: {a} != {b}")
    elif isinstance(a, dict):
        ignore = {"seconds"}
        if set(a) - ignore != set(b) - ignore:
            raise AssertionError(f"{path}: keys {sorted(a)} != {sorted(b)}")
        for k in a:
            if k not in ignore:
                close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        if len(a) != len(b):
            raise AssertionError(f"{path}: lengths {len(a)} != {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            close(x, y, f"{path}[{i}]")
    elif a != b:
        raise AssertionError(f"{path}: {a!r} != {b!r}")

ra, sa = load(sys.argv[1])
rb, sb = load(sys.argv[2])
close(ra, rb, "results")
close(sa, sb, "samples")
PY
}

tasks=(
  "mc --config configs/tasks/multiple_choice.textproto"
  "ppl --config configs/tasks/perplexity.textproto --set task.perplexity.window=64 --set task.perplexity.stride=32"
  "passkey --config configs/tasks/passkey.textproto --set task.passkey.context_lengths=160,256 --set task.passkey.samples_per_cell=1 --set task.passkey.depths=0,1"
  "gen --config configs/tasks/generation.textproto --set sampling.max_new_tokens=12"
)
for task in "${tasks[@]}"; do
  name="${task%% *}"
  flags=(${task#* })
  run "$name-tp1" 1 "${flags[@]}" || { failed=$((failed + 1)); continue; }
  for layout in "tp2 2 --tp 2" "pp2 2 --pp 2" "dp2 2 --dp 2" "tp2pp2 4 --tp 2 --pp 2"; do
    set -- $layout
    lname="$1" np="$2"
    shift 2
    if run "$name-$lname" "$np" "${flags[@]}" "$@" && compare "$work/$name-tp1" "$work/$name-$lname"; then
      echo "ok   $name at $lname equals tp1"
      passed=$((passed + 1))
    else
      echo "FAIL $name at $lname differs from tp1"
      failed=$((failed + 1))
    fi
  done
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
