#!/usr/bin/env bash
# Activation Beacon through the command line with ranks as processes, on the embedded model with
# beacon tensors written here (seeded Gaussian projections and embedding, F32, in their own file
# beside the base model's, joined by model.safetensors.index.json) and beacon_* keys in its
# config.json (window 256, ratio 8):
# - `tessera generate` of prompts of 1.5-6k characters (1-7 condensed windows) gives one rank's
#   tokens and beacon counters at tp 2, pp 2, tp2 x pp2 and dp 2, with --check-rank-agreement;
# - `tessera eval` perplexity streams each text once and gives one rank's NLL at tp 2 (1e-4);
#   passkey at 2048 tokens (twice the model's window) at dp 2 gives one rank's answers;
# - bad input ends every rank with an error naming what to change: a ratio that does not divide
#   the stride, a stride below the window, a window that leaves no room below
#   max_position_embeddings, a random ratio policy in config.json.
#   beacon_mpirun_test.sh TESSERA_BINARY MPIEXEC
set -u
bin="$1"
mpiexec="$2"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
model="$work/beacon-model"
passed=0
failed=0

python3 - "$model" "$PWD/models/tessera-code-tiny" <<'PY'
import json, os, random, struct, sys
out, base = sys.argv[1], sys.argv[2]
os.makedirs(out)
for name in ("tokenizer.model", "generation_config.json"):
    os.symlink(os.path.join(base, name), os.path.join(out, name))
os.symlink(os.path.join(base, "model.safetensors"), os.path.join(out, "base.safetensors"))
raw = open(os.path.join(base, "model.safetensors"), "rb").read(8)
header = json.loads(open(os.path.join(base, "model.safetensors"), "rb").read(8 + struct.unpack("<Q", raw)[0])[8:])
weight_map = {k: "base.safetensors" for k in header if k != "__metadata__"}
config = json.load(open(os.path.join(base, "config.json")))
hidden, heads, kv, d = config["hidden_size"], config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]
shapes = {"model.beacon_embed_tokens.weight": (1, hidden)}
for i in range(config["num_hidden_layers"]):
    p = f"model.layers.{i}.self_attn.beacon_"
    shapes.update({p + "q_proj.weight": (heads * d, hidden), p + "k_proj.weight": (kv * d, hidden),
                   p + "v_proj.weight": (kv * d, hidden), p + "o_proj.weight": (hidden, heads * d)})
rng = random.Random(3)
meta, blobs, offset = {}, [], 0
for name, (r, c) in shapes.items():
    scale = 1.0 if "embed" in name else 0.04
    blob = struct.pack(f"<{r * c}f", *(rng.gauss(0.0, scale) for _ in range(r * c)))
    meta[name] = {"dtype": "F32", "shape": [r, c], "data_offsets": [offset, offset + len(blob)]}
    blobs.append(blob)
    offset += len(blob)
    weight_map[name] = "beacon.safetensors"
head = json.dumps(meta).encode()
head += b" " * (-len(head) % 8)
with open(os.path.join(out, "beacon.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))
json.dump({"weight_map": weight_map}, open(os.path.join(out, "model.safetensors.index.json"), "w"))
config.update({"beacon_window": 256, "beacon_stride": [256], "beacon_ratio": [8],
               "beacon_ratio_mix": "step-random", "beacon_attn": "step-expansion",
               "beacon_attend_previous": True, "beacon_param": ["q", "k", "v", "o"]})
json.dump(config, open(os.path.join(out, "config.json"), "w"), indent=1)
texts = [json.loads(l)["text"] for l in open("configs/tasks/data/code_files.jsonl")]
with open(os.path.join(out, "..", "prompts.jsonl"), "w") as f:
    for i, n in enumerate([3000, 6000, 1500]):
        f.write(json.dumps({"prompt": texts[i][:n]}) + "\n")
with open(os.path.join(out, "..", "texts.jsonl"), "w") as f:
    for i in range(3, 6):
        f.write(json.dumps({"text": texts[i][:5000]}) + "\n")
PY

# shellcheck source=../mpirun_helpers.sh
source "$(dirname "$0")/../mpirun_helpers.sh"

generate() {  # output, np, flags...
  local out="$1" np="$2"
  shift 2
  launch "$np" "$bin" generate --model "$model" --prompts "$work/prompts.jsonl" --output "$out" \
    --max-new-tokens 40 --ignore-eos --max-batch 2 --check-rank-agreement \
    --set method.beacon.ratios=8 "$@" >"$out.log" 2>&1
}

same_lines() {
  python3 - "$1" "$2" <<'PY'
import json, sys
def load(p):
    return [(l["token_ids"], l["method_counters"]) for l in map(json.loads, open(p))]
a, b = load(sys.argv[1]), load(sys.argv[2])
windows = [c["beacon_windows"] for _, c in a]
sys.exit(0 if a == b and max(windows) >= 7 else 1)
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

perplexity() {  # output dir, np, flags...
  local out="$1" np="$2"
  shift 2
  printf 'task { perplexity { data: "%s" } }\n' "$work/texts.jsonl" >"$work/perplexity.textproto"
  launch "$np" "$bin" eval --config "$work/perplexity.textproto" --model "$model" \
    --output-dir "$out" --set method.beacon.ratios=8 "$@" >"$out.log" 2>&1
}
same_nll() {
  python3 - "$1" "$2" <<'PY'
import glob, json, sys
def load(d):
    (p,) = glob.glob(d + "/samples_*.jsonl")
    return [(s["nll"], s["tokens"], s["method"]["beacon_windows"]) for s in map(json.loads, open(p))]
a, b = load(sys.argv[1]), load(sys.argv[2])
worst = max(abs(x[0] - y[0]) / x[1] for x, y in zip(a, b))
print(f"  max |NLL per token - one rank's| {worst:.3g}, windows {[x[2] for x in a]}")
sys.exit(0 if len(a) == 3 and worst <= 1e-4 and [x[1:] for x in a] == [y[1:] for y in b] and min(x[2] for x in a) >= 3 else 1)
PY
}
check "eval perplexity --tp 2: one stream per text, one rank's NLL" eval 'perplexity "$work/pp1" 1 && perplexity "$work/pp2" 2 --tp 2 && same_nll "$work/pp1" "$work/pp2" || { cat "$work/pp1.log" "$work/pp2.log"; false; }'

passkey() {  # output dir, np, flags...
  local out="$1" np="$2"
  shift 2
  launch "$np" "$bin" eval --config configs/tasks/passkey.textproto --model "$model" \
    --set task.passkey.context_lengths=2048 --set task.passkey.samples_per_cell=2 \
    --output-dir "$out" --set method.beacon.ratios=8 "$@" >"$out.log" 2>&1
}
same_answers() {
  python3 - "$1" "$2" <<'PY'
import glob, json, sys
def load(d):
    (p,) = glob.glob(d + "/samples_*.jsonl")
    return [(s["output"], s["method_counters"]) for s in map(json.loads, open(p))]
a, b = load(sys.argv[1]), load(sys.argv[2])
sys.exit(0 if a == b and len(a) == 10 and min(c["beacon_windows"] for _, c in a) >= 7 else 1)
PY
}
check "eval passkey at 2048 tokens --dp 2: one rank's answers" eval 'passkey "$work/pk1" 1 && passkey "$work/pk2" 2 --dp 2 && same_answers "$work/pk1" "$work/pk2" || { cat "$work/pk1.log" "$work/pk2.log"; false; }'

# Bad input: every rank exits non-zero naming what to change.
bad_config="$work/bad-model"
cp -rP "$model" "$bad_config"
python3 - "$bad_config/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["beacon_ratio"] = [2, 4, 8]
c["beacon_ratio_mix"] = "instance-random"
json.dump(c, open(sys.argv[1], "w"))
PY
for bad in "--set method.beacon.ratios=6|ratio 6, which does not divide the stride 256" \
           "--set method.beacon.stride=128|stride 128 below the window 256" \
           "--set method.beacon.window=1000 --set method.beacon.stride=1000|past max_position_embeddings 1024" \
           "--model $bad_config --set method.beacon.window=256|request history"; do
  setting="${bad%%|*}"
  message="${bad#*|}"
  out="$work/bad.jsonl"
  # shellcheck disable=SC2086
  launch 2 "$bin" generate --model "$model" --prompts "$work/prompts.jsonl" --output "$out" \
    --max-new-tokens 4 --tp 2 $setting >"$out.log" 2>&1
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
