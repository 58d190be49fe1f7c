"""Records transformers' early-exit decoding on the embedded model models/tessera-code-tiny: FREE's
shallow-deep decoding and the static-exit baseline, greedy, batch 1, for the runtime's early-exit
tests (shared/specs/early_exit.md §0, §1.3, §2, §8.1-8.3).

Semantics, per prompt (BOS + the SentencePiece ids of the text) and setting (exit layer L_s,
threshold tau):
- The prompt runs at full depth; the first new token is the argmax of the final logits at the
  last prompt position. It is never checked.
- Each later step feeds the last emitted token. The exit head after L_s blocks is
  lm_head(norm(h)), h the residual stream after L_s blocks at the last position; its confidence is
  c = p(1) - p(2), the gap of the two largest softmax probabilities (float64, from the float32
  logits). The token exits iff c > tau, strictly, with tau rounded to float32 as the runtime's
  `threshold` is; it is then the argmax of the exit head, else the argmax of the final logits.
  Argmax ties go to the smaller id.
- Synchronized parallel decoding keeps every layer's KV cache exact, so the final logits of a
  token that goes deep are those of a full forward over the whole prefix. Each step here is one
  full forward of the current sequence (float32 on the bf16 weights, eager attention, no KV
  cache) that gives both heads.
- STATIC: every decode token is the argmax of the exit head (FREE with tau = -1 emits the same).

Settings: FREE with L_s in {2, 4} and tau in {1.0, 0.95, 0.9, 0.8, 0.6, -1.0}, and STATIC with
L_s = 2; 6 code prompts, 24 new tokens each (EOS is an ordinary token, decoding does not stop).

Writes under --out:
- free_reference.json: the prompts, plain greedy continuations, and one run per (setting,
  prompt) with the emitted ids and, per new token, whether it exited, c, the exit head's argmax
  and the final head's argmax; the run's margin min |c - tau| over its checked steps; a summary
  per setting (exit rate, agreement with greedy decoding, smallest margin).
- static_logits.safetensors: for FREE, L_s = 2, tau = -1 on prompt 0: `first.logits` [vocab] (the
  final logits that give the first token), `static.logits` [steps, vocab] (the exit head's logits
  of each later token), `prompt_ids`, `generated_ids` (int32).
- MANIFEST.json: tool, library versions, the checks below, and the size and sha256 of the two
  files above (bmm.json in the same directory comes from early_exit_bmm.py).

Checks before anything is written: every decision is at least 1e-3 from its threshold and every
emitted argmax leads the runner-up logit by at least 1e-3; tau = 1.0 reproduces transformers'
generate (greedy, KV cache); the exit head from hidden_states[L_s] equals transformers' model
truncated to L_s blocks; synchronized parallel decoding run block by block with per-layer KV
caches (pending exited rows go through the deep blocks as one chunk with the next token that goes
deep) emits the same tokens and decisions, its deep logits match the full forward, and after a
final flush every layer's KV cache matches a full-depth prefill of the same tokens.

    python3 tools/reference/early_exit.py --out tests/fixtures/early_exit
"""
import argparse
import copy
import json
import os
import platform
import sys

import numpy as np
import safetensors
import sentencepiece as spm
import torch
import transformers
from safetensors.torch import save_file
from transformers import GenerationConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from llama_layers import head, run_layers

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from make_fixtures import sha256_file  # noqa: E402

TOOL = "tools/reference/early_exit.py"
OUTPUTS = ["free_reference.json", "static_logits.safetensors"]
MODEL_DIR = "models/tessera-code-tiny"
NEW_TOKENS = 24
# Picked so that every decision is at least MIN_MARGIN from its threshold and every emitted
# argmax leads the runner-up by at least MIN_LOGIT_GAP (the last prompt's continuation changes
# when exits are allowed at tau = 0.6).
PROMPTS = [
    "def fibonacci(n):\n",
    "import os\n\nclass ",
    "import os\n\n\ndef list_python_files(path):\n"
    "    \"\"\"Return the .py files under path.\"\"\"\n",
    "for i in range(10):\n    print(",
    "def parse_args():\n    parser = argparse.ArgumentParser(",
    "def add(a, b):\n    return ",
]
MIN_MARGIN = 1e-3       # spec §8.7: decisions closer than this may differ between layouts
MIN_LOGIT_GAP = 1e-3
TAUS = [1.0, 0.95, 0.9, 0.8, 0.6, -1.0]
SETTINGS = ([("FREE", ls, tau) for ls in (2, 4) for tau in TAUS] + [("STATIC", 2, -1.0)])
LOGITS_SETTING = ("FREE", 2, -1.0)  # recorded to static_logits.safetensors for prompt 0
# Tolerances of the checks (float32 on both sides; different chunk shapes change the last bits).
TRUNCATED_TOL = 1e-4
SPD_LOGITS_TOL = 1e-3
SPD_KV_TOL = 1e-4


def load_model(model_dir):
    model = LlamaForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    # Fresh allocations instead of the mmap'd safetensors buffers: the CPU kernels' choice can
    # depend on pointer alignment, which would change the last bits from one run to the next.
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.clone()
    return model


def argmax(logits):
    """Index of the largest value; ties go to the smaller id."""
    return int(np.argmax(logits))


def top2_gap(logits):
    """p(1) - p(2) of softmax(logits), in float64 from the float32 logits."""
    z = logits.astype(np.float64)
    p = np.exp(z - z.max())
    p /= p.sum()
    second, first = np.partition(p, -2)[-2:]
    return float(first - second)


def logit_gap(logits):
    """Top-1 minus top-2 logit: how far an argmax is from a tie."""
    second, first = np.partition(logits, -2)[-2:]
    return float(first - second)


class Heads:
    """Exit-head and final logits at the last position of a token sequence, one full forward
    per distinct sequence (memoized: a sequence always gives the same logits)."""

    def __init__(self, model, exit_layers):
        self.model = model
        self.exit_layers = exit_layers
        self.memo = {}

    @torch.no_grad()
    def __call__(self, seq):
        # hidden_states[l] (l < num_hidden_layers) is the residual stream after l blocks, before
        # the final norm.
        key = tuple(seq)
        if key not in self.memo:
            out = self.model(torch.tensor([seq]), output_hidden_states=True, use_cache=False)
            final = out.logits[0, -1].float().numpy().copy()
            shallow = {l: head(self.model, out.hidden_states[l][:, -1:])[0].float().numpy().copy()
                       for l in self.exit_layers}
            self.memo[key] = (final, shallow)
        return self.memo[key]


def decode(heads, prompt, policy, exit_layer, tau):
    """One run of the reference semantics; returns the run's record and its exit-head logits."""
    tau32 = float(np.float32(tau))
    seq = list(prompt)
    run = dict(policy=policy, exit_layer=exit_layer, tau=tau, tau_f32=tau32,
               generated_ids=[], exited=[], confidence=[], shallow_argmax=[], full_argmax=[])
    shallow_logits, gaps = [], []
    for step in range(NEW_TOKENS):
        final, shallow = heads(seq)
        full_id = argmax(final)
        if step == 0:
            first = final
            exited, c, shallow_id, token = False, None, None, full_id
            gaps.append(logit_gap(final))
        else:
            z = shallow[exit_layer]
            shallow_logits.append(z)
            c = top2_gap(z)
            shallow_id = argmax(z)
            exited = policy == "STATIC" or c > tau32
            token = shallow_id if exited else full_id
            gaps.append(logit_gap(z if exited else final))
        for field, value in (("generated_ids", token), ("exited", exited), ("confidence", c),
                             ("shallow_argmax", shallow_id), ("full_argmax", full_id)):
            run[field].append(value)
        seq.append(token)
    checked = [c for c in run["confidence"] if c is not None]
    run["n_checked"] = len(checked)
    run["n_exits"] = sum(run["exited"])
    run["margin"] = min(abs(c - tau32) for c in checked)
    run["min_logit_gap"] = min(gaps)
    return run, first, np.stack(shallow_logits)


@torch.no_grad()
def layer_kv(model, i, h, positions):
    """Keys (rotated) and values [1, kv_heads, n, head_dim] that block i writes for input h."""
    attn = model.model.layers[i].self_attn
    x = model.model.layers[i].input_layernorm(h)
    n, hd = h.shape[1], attn.head_dim
    cos, sin = model.model.rotary_emb(h, torch.tensor([positions], dtype=torch.long))
    k = attn.k_proj(x).view(1, n, -1, hd).transpose(1, 2)
    v = attn.v_proj(x).view(1, n, -1, hd).transpose(1, 2)
    _, k = apply_rotary_pos_emb(k, k, cos, sin)
    return k, v


@torch.no_grad()
def run_cached(model, h, positions, layers, cache):
    """h [1, n, dim] through blocks `layers`, attending to each block's cache and causally among
    the rows, then appending the rows' keys and values to the cache."""
    for i in layers:
        k, v = layer_kv(model, i, h, positions)
        past = {i: cache[i]} if cache[i] is not None else None
        h = run_layers(model, h, positions, [i], past)
        cache[i] = (k, v) if cache[i] is None else (torch.cat([cache[i][0], k], dim=2),
                                                    torch.cat([cache[i][1], v], dim=2))
    return h


@torch.no_grad()
def spd_decode(model, heads, prompt, exit_layer, tau, reference):
    """FREE's synchronized parallel decoding with per-layer KV caches (spec §1.3); compared with
    the reference run. Returns the largest deviations."""
    layers = model.config.num_hidden_layers
    tau32 = float(np.float32(tau))
    cache = [None] * layers
    x = model.model.embed_tokens(torch.tensor([prompt]))
    h = run_cached(model, x, list(range(len(prompt))), range(layers), cache)
    tokens = [argmax(head(model, h[:, -1:])[0].numpy())]
    deep_done, pending = len(prompt), []
    worst = dict(deep_logits_max_abs=0.0, confidence_max_abs=0.0)
    for step in range(1, NEW_TOKENS):
        t = len(prompt) + step - 1
        x = model.model.embed_tokens(torch.tensor([[tokens[-1]]]))
        h = run_cached(model, x, [t], range(exit_layer), cache)
        z = head(model, h)[0].numpy()
        c = top2_gap(z)
        worst["confidence_max_abs"] = max(worst["confidence_max_abs"],
                                          abs(c - reference["confidence"][step]))
        if c > tau32:
            tokens.append(argmax(z))
            pending.append(h)
            continue
        chunk = torch.cat(pending + [h], dim=1)
        out = run_cached(model, chunk, list(range(deep_done, t + 1)), range(exit_layer, layers),
                         cache)
        deep = head(model, out[:, -1:])[0].numpy()
        full, _ = heads(prompt + tokens)
        worst["deep_logits_max_abs"] = max(worst["deep_logits_max_abs"],
                                           float(np.abs(deep - full).max()))
        tokens.append(argmax(deep))
        deep_done, pending = t + 1, []
    if pending:  # flush: the deep blocks also get the exited tail
        run_cached(model, torch.cat(pending, dim=1),
                   list(range(deep_done, len(prompt) + NEW_TOKENS - 1)),
                   range(exit_layer, layers), cache)
    fed = torch.tensor([prompt + tokens[:-1]])
    ref = model(fed, use_cache=True).past_key_values
    worst["kv_max_abs"] = max(
        float(max((cache[i][0] - ref.layers[i].keys).abs().max(),
                  (cache[i][1] - ref.layers[i].values).abs().max()))
        for i in range(layers))
    worst["tokens_equal"] = tokens == reference["generated_ids"]
    return worst


@torch.no_grad()
def truncated_model(model, layers):
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = layers
    small = LlamaForCausalLM(config).eval()
    small.set_attn_implementation("eager")
    missing, _ = small.load_state_dict(model.state_dict(), strict=False)
    assert not missing, missing
    return small


@torch.no_grad()
def check_truncated(model, heads, exit_layer, prompt, run):
    """The exit head of each decode step against transformers' model truncated to L_s blocks."""
    small = truncated_model(model, exit_layer)
    seq, worst = list(prompt) + run["generated_ids"][:1], 0.0
    for step in range(1, NEW_TOKENS):
        z = small(torch.tensor([seq]), use_cache=False).logits[0, -1].numpy()
        worst = max(worst, float(np.abs(z - heads(seq)[1][exit_layer]).max()))
        assert argmax(z) == run["shallow_argmax"][step]
        seq.append(run["generated_ids"][step])
    return worst


@torch.no_grad()
def generate_greedy(model, prompt):
    config = GenerationConfig(do_sample=False, max_new_tokens=NEW_TOKENS,
                              min_new_tokens=0, eos_token_id=None, pad_token_id=0)
    out = model.generate(torch.tensor([prompt]), generation_config=config)
    return out[0, len(prompt):].tolist()


def agreement(run, greedy):
    prefix = 0
    while prefix < len(greedy) and run["generated_ids"][prefix] == greedy[prefix]:
        prefix += 1
    same = sum(a == b for a, b in zip(run["generated_ids"], greedy))
    return prefix, same


def dumps(obj, indent=0):
    """JSON with one level of indentation per object and lists of numbers on one line."""
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(obj, dict):
        items = [f"{inner}{json.dumps(k)}: {dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        return "[\n" + ",\n".join(inner + dumps(v, indent + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default=MODEL_DIR)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()

    model = load_model(args.model)
    cfg = model.config
    sp = spm.SentencePieceProcessor(model_file=os.path.join(args.model, "tokenizer.model"))
    exit_layers = sorted({ls for _, ls, _ in SETTINGS})
    assert all(0 < ls < cfg.num_hidden_layers for ls in exit_layers)
    heads = Heads(model, exit_layers)
    prompts = [[cfg.bos_token_id] + sp.encode(text) for text in PROMPTS]

    runs, logits = [], {}
    for policy, ls, tau in SETTINGS:
        for i, prompt in enumerate(prompts):
            run, first, shallow = decode(heads, prompt, policy, ls, tau)
            assert run["margin"] >= MIN_MARGIN and run["min_logit_gap"] >= MIN_LOGIT_GAP, \
                (policy, ls, tau, i, run["margin"], run["min_logit_gap"])
            runs.append(dict(prompt=i, prompt_ids=prompt, **run))
            if (policy, ls, tau) == LOGITS_SETTING and i == 0:
                logits = {"first.logits": torch.from_numpy(first),
                          "static.logits": torch.from_numpy(shallow),
                          "prompt_ids": torch.tensor(prompt, dtype=torch.int32),
                          "generated_ids": torch.tensor(run["generated_ids"], dtype=torch.int32)}

    def find(policy, ls, tau, i):
        return next(r for r in runs if (r["policy"], r["exit_layer"], r["tau"], r["prompt"])
                    == (policy, ls, tau, i))

    # Plain greedy decoding is the tau = 1 run (no step may exit), and equals generate's.
    greedy = [find("FREE", 2, 1.0, i)["generated_ids"] for i in range(len(prompts))]
    checks = dict(generate_equal=[], truncated_max_abs={}, spd={})
    for i, prompt in enumerate(prompts):
        for ls in exit_layers:
            never = find("FREE", ls, 1.0, i)
            assert never["n_exits"] == 0 and never["generated_ids"] == greedy[i]
        checks["generate_equal"].append(generate_greedy(model, prompt) == greedy[i])
    assert all(checks["generate_equal"]), checks["generate_equal"]
    for ls in exit_layers:
        worst = max(check_truncated(model, heads, ls, prompts[i], find("FREE", ls, -1.0, i))
                    for i in range(len(prompts)))
        assert worst < TRUNCATED_TOL, f"L_s={ls}: the truncated model differs by {worst}"
        checks["truncated_max_abs"][str(ls)] = worst
    for policy, ls, tau in SETTINGS:
        if policy != "FREE":
            continue
        name = f"L_s={ls} tau={tau}"
        results = [spd_decode(model, heads, prompts[i], ls, tau, find(policy, ls, tau, i))
                   for i in range(len(prompts))]
        worst = {k: max(r[k] for r in results) for k in results[0] if k != "tokens_equal"}
        worst["tokens_equal"] = all(r["tokens_equal"] for r in results)
        assert worst["tokens_equal"], name
        assert worst["deep_logits_max_abs"] < SPD_LOGITS_TOL, (name, worst)
        assert worst["kv_max_abs"] < SPD_KV_TOL, (name, worst)
        checks["spd"][name] = worst
    for policy, ls, tau in SETTINGS:
        if policy == "STATIC":
            free = [find("FREE", ls, -1.0, i)["generated_ids"] for i in range(len(prompts))]
            assert free == [find(policy, ls, tau, i)["generated_ids"] for i in range(len(prompts))]

    summary = []
    for run in runs:
        run["greedy_prefix"], run["greedy_same"] = agreement(run, greedy[run["prompt"]])
    for policy, ls, tau in SETTINGS:
        mine = [r for r in runs if (r["policy"], r["exit_layer"], r["tau"]) == (policy, ls, tau)]
        checked = sum(r["n_checked"] for r in mine)
        exits = sum(r["n_exits"] for r in mine)
        summary.append(dict(
            policy=policy, exit_layer=ls, tau=tau, exits=exits, checked=checked,
            exit_rate=exits / checked,
            greedy_equal_prompts=sum(r["generated_ids"] == greedy[r["prompt"]] for r in mine),
            greedy_token_agreement=sum(r["greedy_same"] for r in mine) / (NEW_TOKENS * len(mine)),
            mean_greedy_prefix=sum(r["greedy_prefix"] for r in mine) / len(mine),
            min_margin=min(r["margin"] for r in mine),
            min_logit_gap=min(r["min_logit_gap"] for r in mine)))

    doc = dict(
        tool=TOOL,
        model=MODEL_DIR,
        num_hidden_layers=cfg.num_hidden_layers,
        vocab_size=cfg.vocab_size,
        bos_token_id=cfg.bos_token_id,
        eos_token_id=cfg.eos_token_id,
        new_tokens=NEW_TOKENS,
        compute="float32 on the bf16 weights, eager attention, a full forward per step",
        confidence="p(1) - p(2) of the exit head's softmax, float64; exit iff c > tau_f32",
        prompts=[dict(text=t, ids=p) for t, p in zip(PROMPTS, prompts)],
        greedy=greedy,
        summary=summary,
        runs=runs,
    )
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, OUTPUTS[0]), "w", encoding="utf-8") as f:
        f.write(dumps(doc) + "\n")
    # a single metadata key: more than one is serialised in hash order (non-reproducible bytes)
    save_file({k: v.contiguous() for k, v in logits.items()},
              os.path.join(args.out, OUTPUTS[1]), metadata={"format": "pt"})

    files = {}
    for name in OUTPUTS:  # only this tool's files: the directory holds other references too
        path = os.path.join(args.out, name)
        files[name] = dict(bytes=os.path.getsize(path), sha256=sha256_file(path))
    manifest = dict(
        tool=TOOL,
        versions=dict(python=platform.python_version(), torch=torch.__version__,
                      transformers=transformers.__version__, safetensors=safetensors.__version__,
                      sentencepiece=spm.__version__, numpy=np.__version__),
        model=MODEL_DIR,
        model_sha256=sha256_file(os.path.join(args.model, "model.safetensors")),
        settings=dict(new_tokens=NEW_TOKENS, taus=TAUS, exit_layers=exit_layers,
                      static_exit_layers=[ls for p, ls, _ in SETTINGS if p == "STATIC"],
                      attn_implementation="eager", dtype="float32",
                      logits_setting=dict(policy=LOGITS_SETTING[0], exit_layer=LOGITS_SETTING[1],
                                          tau=LOGITS_SETTING[2], prompt=0)),
        checks=checks,
        files=files,
    )
    with open(os.path.join(args.out, "MANIFEST.json"), "w", encoding="utf-8") as f:
        f.write(dumps(manifest) + "\n")
    for s in summary:
        print(f"{s['policy']:6s} L_s={s['exit_layer']} tau={s['tau']:5}: exit rate "
              f"{s['exit_rate']:.3f}, greedy-equal prompts {s['greedy_equal_prompts']}/"
              f"{len(prompts)}, token agreement {s['greedy_token_agreement']:.3f}, "
              f"mean greedy prefix {s['mean_greedy_prefix']:.1f}, min margin "
              f"{s['min_margin']:.2e}, min logit gap {s['min_logit_gap']:.2e}")
    print(json.dumps(checks, indent=1))


if __name__ == "__main__":
    main()
