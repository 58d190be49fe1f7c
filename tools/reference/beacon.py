"""Records an Activation Beacon reference (shared/specs/beacon.md) on transformers' Llama modules.

The window loop follows the official v1 code (FlagEmbedding, Long_LLM/activation_beacon,
modeling_beacon.Memory and modeling_llama): per layer a memory B of beacon K/V and a raw window
R, both cached BEFORE RoPE; each forward runs its new rows with past = B ++ R at positions
arange(|B| + |R| + new) (beacons overwritten: step-expansion M + (i+1) r, segmentation M + r,
full-coverage M + W) and rotates every key again; the additive mask lets ordinal rows see the
causal prefix and beacon i see the memory (beacon_attend_previous), its window rows and itself.
Beacon rows use the beacon_q/k/v/o projections and the beacon embedding, everything else the
base weights. After a full window (stride == window) B gains the k beacon rows and R is emptied.
F32 throughout, GQA by repeating KV heads, eager softmax in F32.

The beacon tensors are not trained: they are the base projections plus Gaussian noise (seeded),
so that a runtime that used the base weights for beacon rows would fail the comparison. They are
written under the official names to BEACON_FILE; the runtime's test assembles a checkpoint of the
base model's file and this one.

A second record is on the shipped beacon-trained embedded model (models/tessera-code-tiny-beacon,
bf16 weights computed in F32): held-out code of 4096 and 8192 tokens at the ratio its config's
adapt-256 chooses, into TRAINED_FILE.

Perplexity follows the reference harness: labels shifted once over the whole input, beacon rows
unlabelled, NLL per ordinal token. Generation feeds one token per call through the same loop.

    python3 tools/reference/beacon.py --out tests/fixtures/beacon
"""
import argparse
import json
import os

import numpy as np
import torch
from safetensors.numpy import save_file
from transformers import LlamaForCausalLM
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

BASE = "tests/fixtures/models/llama70b_gqa"
TRAINED = "models/tessera-code-tiny-beacon"
TRAINED_BASE = "models/tessera-code-tiny"
TRAINED_LENGTHS = [4096, 8192]
CASES = [
    # name, window, ratio, mask, attend_previous, input tokens, prompt for generation, new tokens
    ("step", 64, 4, "step-expansion", True, 300, 250, 12),
    ("segment", 64, 8, "segmentation", False, 200, 120, 10),
    ("full", 64, 16, "full-coverage", True, 200, 120, 10),
]


def beacon_weights(model, seed):
    g = torch.Generator().manual_seed(seed)
    out = {}
    emb = model.model.embed_tokens.weight
    out["model.beacon_embed_tokens.weight"] = emb.std() * torch.randn(1, emb.shape[1], generator=g)
    for i, layer in enumerate(model.model.layers):
        for name in ("q", "k", "v", "o"):
            w = getattr(layer.self_attn, f"{name}_proj").weight
            noise = 0.5 * w.std() * torch.randn(w.shape, generator=g)
            out[f"model.layers.{i}.self_attn.beacon_{name}_proj.weight"] = w + noise
    return out


class Memory:
    def __init__(self, layers):
        self.beacon = [None] * layers  # per layer (k, v) [1, kv_heads, M, d], unrotated
        self.raw = [None] * layers
        self.m = 0
        self.r = 0

    def past(self, layer):
        parts = [p for p in (self.beacon[layer], self.raw[layer]) if p is not None]
        if not parts:
            return None
        return (torch.cat([p[0] for p in parts], 2), torch.cat([p[1] for p in parts], 2))


def cat(a, b):
    return b if a is None else (torch.cat([a[0], b[0]], 2), torch.cat([a[1], b[1]], 2))


def run(model, bw, mem, tokens, k, ratio, mask, attend_previous, window):
    """One forward over `tokens` (ordinal) and k beacons; returns the ordinal rows' logits."""
    cfg = model.config
    m, r, n_ord = mem.m, mem.r, len(tokens)
    n = n_ord + k
    past_len = m + r
    pos = torch.arange(past_len + n)
    cover = []
    for i in range(k):
        if mask == "step-expansion":
            pos[past_len + n_ord + i] = m + (i + 1) * ratio
            cover.append((0, (i + 1) * ratio))
        elif mask == "segmentation":
            pos[past_len + n_ord + i] = m + ratio
            cover.append((i * ratio, (i + 1) * ratio))
        else:
            pos[past_len + n_ord + i] = m + window
            cover.append((0, window))
    total = past_len + n
    bias = torch.full((n, total), float("-inf"))
    for t in range(n_ord):
        bias[t, : past_len + t + 1] = 0
    for i in range(k):
        row = n_ord + i
        if attend_previous:
            bias[row, :m] = 0
        a, b = cover[i]
        bias[row, m + a : m + b] = 0
        bias[row, past_len + row] = 0
    ids = torch.tensor([tokens], dtype=torch.long)
    h = model.model.embed_tokens(ids)
    if k:
        h = torch.cat([h, bw["model.beacon_embed_tokens.weight"].expand(k, -1)[None]], 1)
    cos_q, sin_q = model.model.rotary_emb(h, pos[past_len:][None])
    cos_k, sin_k = model.model.rotary_emb(h, pos[None])
    for li, layer in enumerate(model.model.layers):
        attn = layer.self_attn
        hd = attn.head_dim
        x = layer.input_layernorm(h)

        def project(name):
            base = getattr(attn, f"{name}_proj").weight
            w = bw[f"model.layers.{li}.self_attn.beacon_{name}_proj.weight"]
            return torch.cat([x[:, :n_ord] @ base.T, x[:, n_ord:] @ w.T], 1)

        q = project("q").view(1, n, -1, hd).transpose(1, 2)
        kk = project("k").view(1, n, -1, hd).transpose(1, 2)
        vv = project("v").view(1, n, -1, hd).transpose(1, 2)
        past = mem.past(li)
        keys = kk if past is None else torch.cat([past[0], kk], 2)
        values = vv if past is None else torch.cat([past[1], vv], 2)
        q, _ = apply_rotary_pos_emb(q, q, cos_q, sin_q)
        keys_rot, _ = apply_rotary_pos_emb(keys, keys, cos_k, sin_k)
        keys_rot = repeat_kv(keys_rot, attn.num_key_value_groups)
        vals = repeat_kv(values, attn.num_key_value_groups)
        scores = torch.matmul(q, keys_rot.transpose(2, 3)) * attn.scaling + bias
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
        out = torch.matmul(probs, vals).transpose(1, 2).reshape(1, n, -1)
        wo = bw[f"model.layers.{li}.self_attn.beacon_o_proj.weight"]
        o = torch.cat([out[:, :n_ord] @ attn.o_proj.weight.T, out[:, n_ord:] @ wo.T], 1)
        h = h + o
        h = h + layer.mlp(layer.post_attention_layernorm(h))
        # Memory update.
        if k:
            mem.beacon[li] = cat(mem.beacon[li], (kk[:, :, n_ord:], vv[:, :, n_ord:]))
            mem.raw[li] = None
        else:
            mem.raw[li] = cat(mem.raw[li], (kk, vv))
    if k:
        mem.m += k
        mem.r = 0
    else:
        mem.r += n_ord
    return model.lm_head(model.model.norm(h[:, :n_ord]))[0], int(pos.max())


def feed(model, bw, mem, tokens, ratio, mask, attend_previous, window):
    """The window loop over `tokens`; logits [len(tokens), vocab] and the largest position."""
    logits, top, at = [], 0, 0
    while at < len(tokens):
        take = min(len(tokens) - at, window - mem.r)
        k = window // ratio if mem.r + take == window else 0
        out, p = run(model, bw, mem, tokens[at : at + take], k, ratio, mask, attend_previous,
                     window)
        logits.append(out)
        top = max(top, p)
        at += take
    return torch.cat(logits, 0), top


def adapt_ratio(config, tokens):
    """The reference's adapt-N over config.json's ratios."""
    n = int(config["beacon_ratio_mix"].split("-")[1])
    w, top = config["beacon_window"], config["max_position_embeddings"]
    for r in sorted(config["beacon_ratio"]):
        if (top - w) * r + w >= tokens + n:
            return r
    return max(config["beacon_ratio"])


def record_trained(rng):
    from safetensors.torch import load_file
    model = LlamaForCausalLM.from_pretrained(TRAINED_BASE, torch_dtype=torch.float32).eval()
    bw = {k: v.float() for k, v in load_file(os.path.join(TRAINED, "beacon.safetensors")).items()}
    config = json.load(open(os.path.join(TRAINED, "config.json")))
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=os.path.join(TRAINED_BASE, "tokenizer.model"))
    texts = [json.loads(l)["text"] for l in open("configs/tasks/data/code_files.jsonl")]
    ids = [1]
    for t in texts:
        ids += sp.encode(t) + [2]
    arrays, ratios = {}, []
    with torch.no_grad():
        for length in TRAINED_LENGTHS:
            tokens = ids[:length]
            ratio = adapt_ratio(config, length)
            mem = Memory(len(model.model.layers))
            logits, _ = feed(model, bw, mem, tokens, ratio, "step-expansion", True,
                             config["beacon_window"])
            logp = torch.log_softmax(logits.double(), -1)
            nll = -logp[torch.arange(length - 1), torch.tensor(tokens[1:])].float()
            arrays[f"trained_{length}.tokens"] = np.array(tokens, dtype=np.int32)
            arrays[f"trained_{length}.nll"] = nll.numpy()
            ratios.append(ratio)
            print("trained", length, "ratio", ratio, "nll mean", float(nll.mean()),
                  "memory", mem.m, "raw", mem.r)
    return {"arrays": arrays, "ratios": ratios}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM.from_pretrained(BASE, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        bw = beacon_weights(model, seed=11)
    save_file({k: v.numpy().astype(np.float32) for k, v in bw.items()},
              os.path.join(args.out, "beacon.safetensors"))
    rng = np.random.default_rng(5)
    vocab = model.config.vocab_size
    arrays, cases = {}, []
    with torch.no_grad():
        for name, window, ratio, mask, prev, length, prompt_len, new in CASES:
            tokens = rng.integers(3, vocab, size=length).tolist()
            mem = Memory(len(model.model.layers))
            logits, top = feed(model, bw, mem, tokens, ratio, mask, prev, window)
            logp = torch.log_softmax(logits.double(), -1)
            nll = -logp[torch.arange(length - 1), torch.tensor(tokens[1:])].float()
            arrays[f"{name}.tokens"] = np.array(tokens, dtype=np.int32)
            arrays[f"{name}.nll"] = nll.numpy()
            arrays[f"{name}.last_logits"] = logits[-1].numpy()
            # Greedy generation after a prompt, one token per call.
            mem2 = Memory(len(model.model.layers))
            out, _ = feed(model, bw, mem2, tokens[:prompt_len], ratio, mask, prev, window)
            generated = []
            nxt = int(out[-1].argmax())
            for _ in range(new):
                generated.append(nxt)
                out, _ = feed(model, bw, mem2, [nxt], ratio, mask, prev, window)
                nxt = int(out[-1].argmax())
            arrays[f"{name}.generated"] = np.array(generated, dtype=np.int32)
            cases.append({"name": name, "window": window, "ratio": ratio, "mask": mask,
                          "attend_previous": prev, "length": length, "prompt": prompt_len,
                          "new_tokens": new, "memory": mem.m, "raw": mem.r,
                          "max_position": top})
            print(name, "nll mean", float(nll.mean()), "memory", mem.m, "raw", mem.r,
                  "generated", generated)
    save_file(arrays, os.path.join(args.out, "cases.safetensors"))
    trained = record_trained(rng)
    save_file(trained["arrays"], os.path.join(args.out, "trained.safetensors"))
    cases.append({"name": "trained", "model": TRAINED, "lengths": TRAINED_LENGTHS,
                  "ratios": trained["ratios"]})
    with open(os.path.join(args.out, "MANIFEST.json"), "w") as f:
        json.dump({"producer": "tools/reference/beacon.py", "base_model": BASE,
                   "beacon_tensors": "beacon.safetensors (base projections + noise, seed 11)",
                   "cases": cases}, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
