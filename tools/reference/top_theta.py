"""Records Top-theta and Top-k attention on transformers, for the runtime's Top-theta tests
(shared/specs/top_theta.md §1-§4, §8 "Verified").

The attention of every LlamaAttention is replaced (an attention function registered with
transformers' AttentionInterface, as the official code replaces the attention forward) by one
that materializes each layer's [heads, q, N] score matrix in float32, as the official code does,
and follows its semantics without the bugs the spec lists:
- a row of n visible keys (n = its position + 1) is sparsified iff k_l > 0 and n > k_l;
- Top-theta keeps x_j > theta[l][h][n] strictly (x = the scaled score pre-softmax, the full
  softmax probability post-softmax), theta by nearest calibrated bin (ties to the smaller n);
  an empty row keeps its latest maximum (the runtime's documented empty_row default, instead of
  the reference's uniform average over all columns);
- Top-k keeps the k largest scores, ties at the k-th value filled from the largest column down;
- pre-softmax: w = e / (D + s M) with exact SDC M = the dropped mass (SDC is applied at every
  row, also at decode: the reference's decode bug is not copied); post-softmax: w = p on the kept
  keys, no renormalisation; VMC adds (1 - kept mass) times the mean of the row's visible V rows.
Calibration (f = 1: every eligible row): each eligible row's (k+1)-th largest x per head, with
top-k at calibration (tac: the eligible rows run their exact top-k, pre-softmax renormalised or
post-softmax not); theta = mean + 0.1 std (population, float64) per (layer, head, n).

For two models, the embedded models/tessera-code-tiny (8 heads, 2 KV heads) on code and the GQA
fixture tests/fixtures/models/llama70b_gqa (16 heads, 2 KV heads) on random tokens, k = 16 with
layer 0 at k = 32:
- th_pre.txt, th_post.txt: the calibration of each placement on CALIBRATION sequences;
- logits.safetensors: `{variant}.p{i}` [len(ROWS[i]), vocab] float32, the logits of the rows
  ROWS of each held-out prompt i, for dense attention and the four variants of the reproduce
  grid (theta_pre: Top-theta pre + exact SDC + VMC, theta_post: Top-theta post + VMC, topk_pre,
  topk_post likewise), Top-theta with the thresholds above;
- top_theta_reference.json: the settings, the prompt and calibration ids, the rows, per variant
  the kept elements per layer (summed over heads and rows), the smallest |x - theta| of any
  element of an active row, and per layer the elements within rounding of theta (1e-5 of
  1 + |theta| pre-softmax, of theta post-softmax), which another float32 implementation may
  keep or drop;
- MANIFEST.json: library versions and the size and sha256 of every file.

    python3 tools/reference/top_theta.py --out tests/fixtures/top_theta
"""
import argparse
import hashlib
import json
import os

import numpy as np
import torch
import transformers
from safetensors.torch import save_file
from transformers import AttentionInterface, LlamaForCausalLM

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
K, LAYER_K = 16, {0: 32}
SIGMA = 0.1
VARIANTS = {
    "theta_pre": dict(kind="theta", post=False, sdc="exact", vmc=True),
    "theta_post": dict(kind="theta", post=True, sdc="none", vmc=True),
    "topk_pre": dict(kind="topk", post=False, sdc="exact", vmc=True),
    "topk_post": dict(kind="topk", post=True, sdc="none", vmc=True),
}

STATE = {}  # what the attention function does in the current forward pass


def layer_k(layer):
    return LAYER_K.get(layer, K)


def top_k_mask(scores, visible, k):
    """[H, q, N] bool: the k largest visible scores of each row, ties from the largest index."""
    s = scores.masked_fill(~visible, -float("inf"))
    kth = torch.topk(s, k, dim=-1).values[..., k - 1:k]
    keep = (s > kth) & visible
    quota = k - keep.sum(-1, keepdim=True)
    ties = (s == kth) & visible
    from_right = torch.flip(torch.cumsum(torch.flip(ties.int(), [-1]), -1), [-1])
    return keep | (ties & (from_right <= quota))


def table_lookup(table, layer, heads, lengths):
    """theta [H, q] by nearest calibrated bin (ties to the smaller n)."""
    out = torch.empty(heads, len(lengths), dtype=torch.float32)
    for h in range(heads):
        bins = table[(layer, h)]
        ns = np.array(sorted(bins))
        for i, n in enumerate(lengths):
            d = np.abs(ns - n)
            out[h, i] = float(bins[int(ns[np.argmin(d)])])  # argmin: the first, the smaller n
    return out


def sparse_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    layer = module.layer_idx
    g = module.num_key_value_groups
    q = query[0].float()                                   # [H, q, d]
    keys = key[0].float().repeat_interleave(g, dim=0)      # [H, N, d]
    values = value[0].float()                              # [Hkv, N, d]
    heads, rows, n_keys = q.shape[0], q.shape[1], keys.shape[1]
    scores = torch.matmul(q, keys.transpose(1, 2)) * scaling
    lengths = [n_keys - rows + i + 1 for i in range(rows)]
    col = torch.arange(n_keys)
    visible = (col[None, :] < torch.tensor(lengths)[:, None]).expand(heads, rows, n_keys)
    m = scores.masked_fill(~visible, -float("inf")).amax(-1, keepdim=True)
    e = torch.exp(scores - m) * visible
    z_all = e.sum(-1, keepdim=True)
    k = layer_k(layer)
    active = torch.tensor([k > 0 and n > k for n in lengths])[None, :, None]
    mode = STATE["mode"]
    post = mode.get("post", False)
    x = e / z_all if post else scores
    if mode.get("record") is not None and k > 0:
        for i, n in enumerate(lengths):
            if n <= k:
                continue
            for h in range(heads):
                row = x[h, i, :n]
                t = torch.sort(row, descending=True).values[k]
                mode["record"].setdefault((layer, h, n), []).append(float(t))
    kind = mode.get("kind")
    if kind == "theta":
        theta = table_lookup(mode["table"], layer, heads, lengths)[..., None]
        keep = (x > theta) & visible
        empty = keep.sum(-1, keepdim=True) == 0
        latest_max = (n_keys - 1) - torch.argmax(
            torch.flip(scores.masked_fill(~visible, -float("inf")), [-1]), dim=-1)
        keep = keep | (empty & (col[None, None, :] == latest_max[..., None]))
        margin = (x - theta).abs().masked_fill(~(visible & active), float("inf"))
        STATE["margin"] = min(STATE.get("margin", float("inf")), float(margin.min()))
        # Within rounding of the threshold: relative 1e-5 of the score scale (1 + |theta|)
        # pre-softmax, of theta post-softmax.
        tolerance = 1e-5 * (theta.abs() if post else 1 + theta.abs())
        near = STATE.setdefault("near", {})
        near[layer] = near.get(layer, 0) + int((margin <= tolerance).sum())
    elif kind == "topk":
        keep = top_k_mask(scores, visible, k) if k > 0 else visible
    else:
        keep = visible
    keep = torch.where(active, keep, visible)
    dropped = (e * (visible & ~keep)).sum(-1, keepdim=True)
    kept_e = e * keep
    if post or kind is None:
        w = kept_e / z_all
        lost = dropped / z_all
    else:
        missing = dropped if mode.get("sdc") == "exact" else torch.zeros_like(dropped)
        z = kept_e.sum(-1, keepdim=True) + missing
        w = kept_e / z
        lost = missing / z
    w = torch.where(active, w, e / z_all)
    lost = torch.where(active, lost, torch.zeros_like(lost))
    out = torch.matmul(w, values.repeat_interleave(g, dim=0))  # [H, q, d]
    if mode.get("vmc"):
        prefix = torch.cumsum(values, dim=1)[:, n_keys - rows:, :]  # [Hkv, q, d]
        vbar = prefix / torch.tensor(lengths, dtype=torch.float32)[None, :, None]
        out = out + lost * vbar.repeat_interleave(g, dim=0)
    counts = STATE.setdefault("kept", {})
    counts[layer] = counts.get(layer, 0) + int(keep.sum())
    return out.transpose(0, 1)[None].to(query.dtype).contiguous(), None


AttentionInterface.register("top_theta_reference", sparse_attention)


def shortest(x):
    return repr(float(x))


def calibrate(model, sequences, post, tac):
    record = {}
    STATE.clear()
    STATE["mode"] = dict(record=record, kind="topk" if tac else None, post=post)
    with torch.no_grad():
        for s in sequences:
            model(torch.tensor([s]))
    table, lines = {}, []
    for (layer, h, n), values in sorted(record.items()):
        v = np.array(values, dtype=np.float64)
        theta = float(v.mean() + SIGMA * v.std())
        table.setdefault((layer, h), {})[n] = np.float32(theta)
        lines.append(f"L{layer}_H{h}:{n} {shortest(theta)} {len(values)} {layer_k(layer)}")
    return table, "\n".join(lines) + "\n"


def code_sequences(tokenizer_path, path, first, count, length):
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=tokenizer_path)
    out = []
    with open(path) as f:
        lines = f.readlines()
    for line in lines[first:first + count]:
        ids = sp.encode(json.loads(line)["text"])
        out.append([1] + ids[:length - 1])
    return out


def rows_of(length):
    return sorted(set(list(range(7, length, 8)) + [length - 1]))


def record_model(name, model_dir, calibration, prompts, out_dir):
    model = LlamaForCausalLM.from_pretrained(
        model_dir, torch_dtype=torch.float32, attn_implementation="top_theta_reference").eval()
    os.makedirs(out_dir, exist_ok=True)
    tables = {}
    for post, placement in ((False, "pre"), (True, "post")):
        table, text = calibrate(model, calibration, post, tac=True)
        tables[post] = table
        os.makedirs(os.path.join(out_dir, placement), exist_ok=True)
        with open(os.path.join(out_dir, placement, "th.txt"), "w") as f:
            f.write(text)
    tensors, summary = {}, {}
    eager = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32,
                                             attn_implementation="eager").eval()
    for variant, mode in [("dense", {})] + list(VARIANTS.items()):
        STATE.clear()
        mode = dict(mode)
        if mode.get("kind") == "theta":
            mode["table"] = tables[mode["post"]]
        STATE["mode"] = mode
        kept = {}
        for i, p in enumerate(prompts):
            with torch.no_grad():
                logits = model(torch.tensor([p])).logits[0]
            tensors[f"{variant}.p{i}"] = logits[rows_of(len(p))].contiguous()
            if variant == "dense":
                with torch.no_grad():
                    ref = eager(torch.tensor([p])).logits[0]
                err = float((ref - logits).abs().max())
                assert err < 1e-4, f"{name}: dense reference attention differs from eager by {err}"
        summary[variant] = {"kept_per_layer": [STATE.get("kept", {}).get(l, 0)
                                               for l in range(model.config.num_hidden_layers)],
                            "min_margin": STATE.get("margin"),
                            "near_threshold_per_layer": [
                                STATE.get("near", {}).get(l, 0)
                                for l in range(model.config.num_hidden_layers)]}
    save_file(tensors, os.path.join(out_dir, "logits.safetensors"))
    return {"model": model_dir, "k": K, "layer_k": {str(k): v for k, v in LAYER_K.items()},
            "calib_add_sigma": SIGMA, "calib_tac": True, "calib_sample_frac": 1.0,
            "calibration_ids": calibration, "prompt_ids": prompts,
            "rows": [rows_of(len(p)) for p in prompts],
            "variants": {k: {kk: vv for kk, vv in v.items()} for k, v in VARIANTS.items()},
            "summary": summary}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures", "top_theta"))
    args = ap.parse_args()
    torch.manual_seed(0)
    reference = {}
    tiny = os.path.join(REPO, "models", "tessera-code-tiny")
    tok = os.path.join(tiny, "tokenizer.model")
    reference["tiny"] = record_model(
        "tiny", tiny,
        code_sequences(tok, os.path.join(REPO, "configs/tasks/data/code_calibration.jsonl"), 0, 3, 160),
        code_sequences(tok, os.path.join(REPO, "configs/tasks/data/code_files.jsonl"), 0, 2, 120),
        os.path.join(args.out, "tiny"))
    gqa = os.path.join(REPO, "tests", "fixtures", "models", "llama70b_gqa")
    rng = np.random.default_rng(5)
    random_ids = lambda n: [1] + [int(t) for t in rng.integers(3, 512, n - 1)]
    reference["gqa"] = record_model("gqa", gqa, [random_ids(140) for _ in range(3)],
                                    [random_ids(100) for _ in range(2)],
                                    os.path.join(args.out, "gqa"))
    with open(os.path.join(args.out, "top_theta_reference.json"), "w") as f:
        json.dump(reference, f, indent=1)
    files = {}
    for root, _, names in os.walk(args.out):
        for n in sorted(names):
            if n == "MANIFEST.json":
                continue
            p = os.path.join(root, n)
            data = open(p, "rb").read()
            files[os.path.relpath(p, args.out)] = {"bytes": len(data),
                                                   "sha256": hashlib.sha256(data).hexdigest()}
    manifest = {"tool": "tools/reference/top_theta.py", "torch": torch.__version__,
                "transformers": transformers.__version__, "files": files}
    with open(os.path.join(args.out, "MANIFEST.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    for model, r in reference.items():
        print(model, {v: s["min_margin"] for v, s in r["summary"].items()})


if __name__ == "__main__":
    main()
