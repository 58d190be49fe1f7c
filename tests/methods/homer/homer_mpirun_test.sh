#!/usr/bin/env bash
# HOMER through the command line with ranks as processes, on the embedded model:
# - `tessera calibrate` writes the same bias table at tp 2 and pp 2 as on one rank (within 1e-4);
# - `tessera generate` of prompts 2-6x the chunk length gives one rank's tokens and HOMER counters
#   at tp 2, pp 2, tp2 x pp2 and dp 2, with --check-rank-agreement;
# - `tessera eval` code_passkey with HOMER at dp 2 gives one rank's answers;
# - bad input ends every rank with an error naming what to change:
#   a table calibrated for a shorter chunk, a missing bias file, prefix_len + suffix_len that
#   leave no room in a chunk.
#   homer_mpirun_test.sh TESSERA_BINARY MPIEXEC
set -u
bin="$1"
mpiexec="$2"
model="models/tessera-code-tiny"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
passed=0
failed=0
homer=(--set method.homer.max_chunk_len=256 --set method.homer.target_len=256
       --set method.homer.layers_warmup=2 --set method.homer.prefix_len=24
       --set method.homer.suffix_len=24)

# shellcheck source=../mpirun_helpers.sh
source "$(dirname "$0")/../mpirun_helpers.sh"

# Long prompts: held-out code files, cut to about 3000 and 6000 characters.
python3 - "$work/prompts.jsonl" <<'PY'
import json, sys
texts = [json.loads(l)["text"] for l in open("configs/tasks/data/code_files.jsonl")]
with open(sys.argv[1], "w") as f:
    for i, n in enumerate([3000, 6000, 1500]):
        f.write(json.dumps({"prompt": texts[i][:n]}) + "\n")
PY

calibrate() {  # output, np, flags...
  local out="$1" np="$2"
  shift 2
  launch "$np" "$bin" calibrate --model "$model" --data configs/tasks/data/code_calibration.jsonl \
    --limit 12 --set method.homer.max_chunk_len=256 --set "method.homer.bias_path=$out" "$@" \
    >"$out.log" 2>&1
}

same_table() {
  python3 - "$1" "$2" <<'PY'
import json, struct, sys
def load(p):
    raw = open(p, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    begin, end = header["bias"]["data_offsets"]
    body = raw[8 + n + begin:8 + n + end]
    return header["bias"]["shape"], struct.unpack(f"<{len(body) // 4}f", body)
(sa, a), (sb, b) = load(sys.argv[1]), load(sys.argv[2])
worst = max(abs(x - y) for x, y in zip(a, b))
print(f"  shape {sa}, max |diff| {worst:.3g}")
sys.exit(0 if sa == sb and sa == [8, 256] and worst <= 1e-4 else 1)
PY
}

bias="$work/bias.safetensors"
if ! calibrate "$bias" 1; then echo "FAIL calibrate, one rank:"; cat "$bias.log"; exit 1; fi
for layout in "2 --tp 2" "2 --pp 2"; do
  read -r np flags <<<"$layout"
  out="$work/bias_layout.safetensors"
  # shellcheck disable=SC2086
  check "calibrate $flags: one rank's table" eval 'calibrate "$out" "$np" $flags && same_table "$bias" "$out" || { cat "$out.log"; false; }'
done

generate() {  # output, np, flags...
  local out="$1" np="$2"
  shift 2
  launch "$np" "$bin" generate --model "$model" --prompts "$work/prompts.jsonl" --output "$out" \
    --max-new-tokens 12 --ignore-eos --max-batch 2 --check-rank-agreement \
    --set "method.homer.bias_path=$bias" "${homer[@]}" "$@" >"$out.log" 2>&1
}

same_lines() {
  python3 - "$1" "$2" <<'PY'
import json, sys
def load(p):  # homer_tree_kv_bytes is this rank's K/V: it depends on the layout
    return [(l["token_ids"], {k: v for k, v in l["method_counters"].items()
                              if k != "homer_tree_kv_bytes"}) for l in map(json.loads, open(p))]
a, b = load(sys.argv[1]), load(sys.argv[2])
chunks = [c["homer_chunks"] for _, c in a]
sys.exit(0 if a == b and max(chunks) >= 4 else 1)
PY
}

ref="$work/one.jsonl"
if ! generate "$ref" 1; then echo "FAIL generate, one rank:"; cat "$ref.log"; exit 1; fi
for layout in "2 --tp 2" "2 --pp 2" "4 --tp 2 --pp 2" "2 --dp 2"; do
  read -r np flags <<<"$layout"
  out="$work/out.jsonl"
  # shellcheck disable=SC2086
  check "generate $flags: one rank's tokens and counters" eval 'generate "$out" "$np" $flags && same_lines "$ref" "$out" || { cat "$out.log"; false; }'
done

passkey() {  # output dir, np, flags...
  local out="$1" np="$2"
  shift 2
  launch "$np" "$bin" eval --config configs/tasks/code_passkey.textproto --limit 40 \
    --output-dir "$out" --set "method.homer.bias_path=$bias" "${homer[@]}" "$@" \
    >"$out.log" 2>&1
}
same_answers() {
  python3 - "$1" "$2" <<'PY'
import glob, json, sys
def load(d):
    (p,) = glob.glob(d + "/samples_*.jsonl")
    return [(s["output"], {k: v for k, v in s["method_counters"].items()
                           if k != "homer_tree_kv_bytes"}) for s in map(json.loads, open(p))]
a, b = load(sys.argv[1]), load(sys.argv[2])
chunks = max(c["homer_chunks"] for _, c in a)
sys.exit(0 if a == b and len(a) == 40 and chunks >= 2 else 1)
PY
}
check "eval code_passkey --dp 2: one rank's answers" eval 'passkey "$work/pk1" 1 && passkey "$work/pk2" 2 --dp 2 && same_answers "$work/pk1" "$work/pk2" || { cat "$work/pk1.log" "$work/pk2.log"; false; }'

# Bad input: every rank exits non-zero naming what to change.
short="$work/short_window.safetensors"
calibrate "$short" 1 --set method.homer.max_chunk_len=128 --set method.homer.prefix_len=24 \
  --set method.homer.suffix_len=24 ||
  { echo "FAIL calibrate of a 128-token table"; cat "$short.log"; }
for bad in "method.homer.bias_path=$short|covers distances 0..127 but method.homer.max_chunk_len 256" \
           "method.homer.bias_path=$work/absent.safetensors|absent.safetensors" \
           "method.homer.prefix_len=240|prefix_len + suffix_len is 264"; do
  setting="${bad%%|*}"
  message="${bad#*|}"
  out="$work/bad.jsonl"
  generate "$out" 2 --tp 2 --set "$setting"
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
