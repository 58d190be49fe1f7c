#!/usr/bin/env python3
"""Trains Activation Beacon parameters for the embedded model, its base weights frozen.

The recipe of the beacon paper (shared/seeds/004, shared/specs/beacon.md §5) scaled down:
sequences of --seq-len tokens streamed in windows of --window tokens; after every window but
the last, k = window / r beacon tokens (one shared embedding, their own q/k/v/o projections per
layer) condense it, r drawn per window from --ratios (step-random), step-expansion mask, beacons
attending to the memory; the next window attends to [all earlier beacons' K/V] + its own rows.
Loss: next-token cross-entropy over the ordinal tokens only, conditioned on the memory
("beaconed auto-regression"), gradients flowing through the memory into the earlier windows'
beacons. Data: the training split of the base model's corpus (tools/train/build_corpus.py),
with --kr-frac of the sequences a long key-retrieval sample (tools/train/keyretrieval.py: a key
near the start, asked at the end, its tokens weighted --kr-answer-weight).

Initialisation as the reference's: each beacon projection a copy of its base twin, the beacon
embedding the EOS token's. Resumable: --ckpt holds the parameters, the optimizer, the step and
the loss log, written every --save-every steps; a rerun continues from it. The micro-batch of a
step is a pure function of (seed, step).

    python3 tools/train/build_corpus.py --out /root/tessera-train/data
    python3 tools/train/beacon.py --data /root/tessera-train/data \
        --ckpt /root/tessera-train/beacon.pt --out models/tessera-code-tiny-beacon
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import sentencepiece as spm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import LlamaForCausalLM
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from keyretrieval import KeyRetrieval  # noqa: E402

BASE = "models/tessera-code-tiny"
BOS, EOS = 1, 2


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="directory of corpus_train.jsonl")
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--out", default=None, help="write the beacon checkpoint directory here")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--ratios", default="2,4,8,16,32")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--kr-frac", type=float, default=0.5)
    ap.add_argument("--kr-answer-weight", type=float, default=5.0)
    ap.add_argument("--save-every", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--max-minutes", type=float, default=0, help="stop (saving) after this long")
    return ap.parse_args()


class Beacon(torch.nn.Module):
    """The trainable tensors, under the official names (dots as '__')."""

    def __init__(self, model):
        super().__init__()
        emb = model.model.embed_tokens.weight
        self.embed = torch.nn.Parameter(emb[EOS:EOS + 1].detach().clone())
        self.proj = torch.nn.ParameterDict()
        for i, layer in enumerate(model.model.layers):
            for name in ("q", "k", "v", "o"):
                w = getattr(layer.self_attn, f"{name}_proj").weight
                self.proj[f"{i}_{name}"] = torch.nn.Parameter(w.detach().clone())

    def tensors(self):
        out = {"model.beacon_embed_tokens.weight": self.embed}
        for key, w in self.proj.items():
            i, name = key.split("_")
            out[f"model.layers.{i}.self_attn.beacon_{name}_proj.weight"] = w
        return out


def window_forward(model, beacon, memory, x, k, ratio):
    """One window of every sequence: x [B, W] ordinal ids, then k beacons. memory: per layer
    (keys, values) [B, kv_heads, M, d] unrotated, or None. Returns the ordinal rows' logits and
    the beacons' per-layer K/V (None when k == 0)."""
    bsz, w = x.shape
    m = 0 if memory[0] is None else memory[0][0].shape[2]
    n = w + k
    pos_q = torch.arange(m, m + w)
    if k:
        pos_q = torch.cat([pos_q, m + (torch.arange(k) + 1) * ratio])
    pos_k = torch.cat([torch.arange(m), pos_q])
    # Ordinal rows: causal over memory and window; beacon i: memory, window rows [0, (i+1)r),
    # itself.
    bias = torch.full((n, m + n), float("-inf"))
    bias[:, :m] = 0
    bias[:w, m:m + w] = torch.triu(torch.full((w, w), float("-inf")), diagonal=1)
    for i in range(k):
        bias[w + i, m:m + (i + 1) * ratio] = 0
        bias[w + i, m + w + i] = 0
    h = model.model.embed_tokens(x)
    if k:
        h = torch.cat([h, beacon.embed.expand(bsz, k, -1)], 1)
    cos_q, sin_q = model.model.rotary_emb(h, pos_q[None])
    cos_k, sin_k = model.model.rotary_emb(h, pos_k[None])
    new_memory = []
    for li, layer in enumerate(model.model.layers):
        attn = layer.self_attn
        hd = attn.head_dim
        xs = layer.input_layernorm(h)

        def project(name, rows):
            base = getattr(attn, f"{name}_proj").weight
            if not k:
                return rows @ base.T
            return torch.cat([rows[:, :w] @ base.T, rows[:, w:] @ beacon.proj[f"{li}_{name}"].T], 1)

        q = project("q", xs).view(bsz, n, -1, hd).transpose(1, 2)
        kk = project("k", xs).view(bsz, n, -1, hd).transpose(1, 2)
        vv = project("v", xs).view(bsz, n, -1, hd).transpose(1, 2)
        if memory[li] is not None:
            keys = torch.cat([memory[li][0], kk], 2)
            values = torch.cat([memory[li][1], vv], 2)
        else:
            keys, values = kk, vv
        q, _ = apply_rotary_pos_emb(q, q, cos_q, sin_q)
        keys_rot, _ = apply_rotary_pos_emb(keys, keys, cos_k, sin_k)
        scores = torch.matmul(q, repeat_kv(keys_rot, attn.num_key_value_groups).transpose(2, 3))
        probs = torch.softmax(scores * attn.scaling + bias, dim=-1, dtype=torch.float32)
        out = torch.matmul(probs, repeat_kv(values, attn.num_key_value_groups))
        out = out.transpose(1, 2).reshape(bsz, n, -1)
        h = h + project("o", out)
        h = h + layer.mlp(layer.post_attention_layernorm(h))
        new_memory.append((kk[:, :, w:], vv[:, :, w:]) if k else None)
    logits = model.lm_head(model.model.norm(h[:, :w]))
    return logits, new_memory


def sequence_loss(model, beacon, x, y, weight, window, ratios, rng):
    memory = [None] * len(model.model.layers)
    total, count = 0.0, 0.0
    windows = x.shape[1] // window
    for wi in range(windows):
        sl = slice(wi * window, (wi + 1) * window)
        last = wi == windows - 1
        ratio = int(rng.choice(ratios))
        k = 0 if last else window // ratio
        logits, new = window_forward(model, beacon, memory, x[:, sl], k, ratio)
        ce = F.cross_entropy(logits.flatten(0, 1), y[:, sl].flatten(), reduction="none")
        total = total + (ce * weight[:, sl].flatten()).sum()
        count += float(weight[:, sl].sum())
        if k:
            memory = [(n[0], n[1]) if mem is None else
                      (torch.cat([mem[0], n[0]], 2), torch.cat([mem[1], n[1]], 2))
                      for mem, n in zip(memory, new)]
    return total / count


def batch(tokens, sp, docs, args, step):
    rng = np.random.default_rng([args.seed, step])
    kr = KeyRetrieval(sp, docs, seed=int(rng.integers(1 << 62)))
    t = args.seq_len
    rows, weights = [], []
    for _ in range(args.batch):
        w = np.ones(t, dtype=np.float32)
        if rng.random() < args.kr_frac:
            ids, ans, _, _ = kr.make_sample(t)
            row = np.asarray([BOS] + ids, dtype=np.int64)
            w[ans:] = args.kr_answer_weight  # targets y[ans:] are the key and its quote
        else:
            off = int(rng.integers(0, len(tokens) - t - 1))
            row = tokens[off:off + t + 1].astype(np.int64)
        rows.append(row)
        weights.append(w)
    xy = torch.from_numpy(np.stack(rows))
    return xy[:, :-1], xy[:, 1:], torch.from_numpy(np.stack(weights)), rng


def export(beacon, args, log):
    out = args.out
    os.makedirs(out, exist_ok=True)
    tensors = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in beacon.tensors().items()}
    save_file(tensors, os.path.join(out, "beacon.safetensors"))
    base = os.path.relpath(os.path.abspath(BASE), os.path.abspath(out))
    for name, target in (("model-base.safetensors", "model.safetensors"),
                         ("tokenizer.model", "tokenizer.model"),
                         ("generation_config.json", "generation_config.json")):
        link = os.path.join(out, name)
        if not os.path.lexists(link):
            os.symlink(os.path.join(base, target), link)
    from safetensors import safe_open
    weight_map = {}
    with safe_open(os.path.join(BASE, "model.safetensors"), "pt") as f:
        for name in f.keys():
            weight_map[name] = "model-base.safetensors"
    for name in tensors:
        weight_map[name] = "beacon.safetensors"
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=1, sort_keys=True)
        f.write("\n")
    config = json.load(open(os.path.join(BASE, "config.json")))
    ratios = [int(r) for r in args.ratios.split(",")]
    config.update({"beacon_window": args.window, "beacon_stride": [args.window],
                   "beacon_attn": "step-expansion", "beacon_attend_previous": True,
                   "beacon_ratio": ratios, "beacon_ratio_mix": "adapt-256",
                   "beacon_param": ["q", "k", "v", "o"]})
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    with open(os.path.join(out, "training_state.json"), "w") as f:
        json.dump({"args": vars(args), "log": log}, f, indent=1)
        f.write("\n")
    plot_loss(log, os.path.join(out, "loss_curve.png"))


def plot_loss(log, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    steps = [e["step"] for e in log]
    loss = [e["loss"] for e in log]
    smooth, acc = [], None
    for x in loss:
        acc = x if acc is None else 0.9 * acc + 0.1 * x
        smooth.append(acc)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, loss, alpha=0.3, label="per step (weighted CE over ordinal tokens)")
    ax.plot(steps, smooth, label="exponential average (0.9)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Beacon training, base weights frozen")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM.from_pretrained(BASE, torch_dtype=torch.float32).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    beacon = Beacon(model)
    opt = torch.optim.AdamW(beacon.parameters(), lr=args.lr, weight_decay=0.0)
    state = {"step": 0, "log": []}
    if os.path.exists(args.ckpt):
        saved = torch.load(args.ckpt, weights_only=False)
        beacon.load_state_dict(saved["beacon"])
        opt.load_state_dict(saved["opt"])
        state = saved["state"]
        print(f"resumed at step {state['step']}")
    sp = spm.SentencePieceProcessor(model_file=os.path.join(BASE, "tokenizer.model"))
    docs = [json.loads(l)["text"] for l in open(os.path.join(args.data, "corpus_train.jsonl"))]
    ids = []
    for d in docs:
        ids.append(BOS)
        ids.extend(sp.encode(d))
        ids.append(EOS)
    tokens = np.asarray(ids, dtype=np.uint16)
    ratios = [int(r) for r in args.ratios.split(",")]
    start = time.time()

    def save():
        torch.save({"beacon": beacon.state_dict(), "opt": opt.state_dict(), "state": state},
                   args.ckpt + ".tmp")
        os.replace(args.ckpt + ".tmp", args.ckpt)

    while state["step"] < args.steps:
        step = state["step"]
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * 0.5 * (
            1 + math.cos(math.pi * step / args.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        x, y, w, rng = batch(tokens, sp, docs, args, step)
        loss = sequence_loss(model, beacon, x, y, w, args.window, ratios, rng)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(beacon.parameters(), 1.0)
        opt.step()
        state["step"] = step + 1
        state["log"].append({"step": step + 1, "loss": loss.item(), "lr": lr})
        print(f"step {step + 1} loss {float(loss):.4f} lr {lr:.2e} "
              f"{time.time() - start:.0f}s", flush=True)
        if state["step"] % args.save_every == 0:
            save()
        if args.max_minutes and time.time() - start > 60 * args.max_minutes:
            break
    save()
    if args.out:
        export(beacon, args, state["log"])


if __name__ == "__main__":
    main()
