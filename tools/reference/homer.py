"""Records a HOMER reference (shared/specs/homer.md) on transformers' Llama modules.

The tree follows the official patch (alinlab/HOMER, src/homer/modeling_llama.py and chunk.py):
chunks of prefix ‖ context slice ‖ suffix with local positions, leaves through layers [0, a0),
pairwise merges (left prefix, both contexts, the mean of the two suffixes, in hidden states and in
every lower layer's K/V), each node's layers over its own rows causally by index, and after a
node's last layer the removal of its least significant context rows: max over heads of the
pre-softmax logit from the node's last row minus bias[layer][pos_last - pos], ties to the lower
index, removed from the hidden rows and from the K/V of every layer the node holds. With the
spec's fixes: F32 throughout (no fp16 rounding), GQA by repeating each KV head over its query
group, a causal mask in every pass, and the significance computed only at pruning layers.

The bias table is calibrated here too (spec §3): the plain model over windows of C tokens, max
over heads of the last row's logits, mean per distance. Both the table and the windows are
recorded, so Tessera's `calibrate` can be checked on the same data, and the HOMER run uses that
table.

    python3 tools/reference/homer.py --out tests/fixtures/homer
"""
import argparse
import json
import math
import os

import numpy as np
import torch
from safetensors.numpy import save_file
from transformers import LlamaForCausalLM
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

CASES = [
    # name, model dir, prompt lengths, C, T, W, P, S, calibration windows
    ("tiny", "models/tessera-code-tiny", [2048, 4096], 512, 512, 2, 32, 32, 6),
    ("gqa", "tests/fixtures/models/llama70b_gqa", [2048, 4096], 1024, 1024, 0, 16, 16, 4),
]


def qkv(model, layer_index, h, positions):
    attn = model.model.layers[layer_index].self_attn
    x = model.model.layers[layer_index].input_layernorm(h)
    n, hd = h.shape[1], attn.head_dim
    q = attn.q_proj(x).view(1, n, -1, hd).transpose(1, 2)
    k = attn.k_proj(x).view(1, n, -1, hd).transpose(1, 2)
    v = attn.v_proj(x).view(1, n, -1, hd).transpose(1, 2)
    cos, sin = model.model.rotary_emb(h, torch.tensor([positions], dtype=torch.long))
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    return q, k, v


def attend(model, layer_index, q, k, v):
    """Causal (by index) attention of q over k, v of the same rows; o_proj applied."""
    attn = model.model.layers[layer_index].self_attn
    n = q.shape[2]
    keys = repeat_kv(k, attn.num_key_value_groups)
    values = repeat_kv(v, attn.num_key_value_groups)
    scores = torch.matmul(q, keys.transpose(2, 3)) * attn.scaling
    scores = scores + torch.triu(torch.full((n, n), float("-inf")), diagonal=1)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
    out = torch.matmul(probs, values).transpose(1, 2).reshape(1, n, -1)
    return attn.o_proj(out), keys, attn.scaling


def last_row_scores(q, keys, scaling):
    """max over heads of q_last . k_j * scaling: [n]."""
    return (torch.matmul(q[:, :, -1:, :], keys.transpose(2, 3)) * scaling)[0, :, 0, :].max(dim=0).values


class Node:
    def __init__(self, hidden, positions, source, prunable, kv):
        self.hidden, self.positions, self.source, self.prunable, self.kv = (
            hidden, positions, source, prunable, kv)


def schedule(P, N, S, C, W, L):
    E = C - P - S
    n0 = max(1, math.ceil(N / E))
    h = 0
    while (1 << h) < n0:
        h += 1
    n = 1 << h
    e = math.ceil(N / n)
    lpc = (L - W) // (h + 1)
    lo = (L - W) - lpc * (h + 1)
    a0 = W + lo + lpc
    ends = [a0 + k * lpc for k in range(h + 1)]
    return dict(E=E, n=n, h=h, e=e, ends=ends, Dh=P + E // 2 + S)


@torch.no_grad()
def run_node(model, node, first, end, target, bias):
    rows = node.hidden.shape[1]
    prune = rows > target
    h = node.hidden
    for l in range(first, end):
        layer = model.model.layers[l]
        q, k, v = qkv(model, l, h, node.positions)
        node.kv[l] = (k, v)
        out, keys, scaling = attend(model, l, q, k, v)
        h = h + out
        if l == end - 1 and prune:
            raw = last_row_scores(q, keys, scaling)
            last = node.positions[-1]
            sig = torch.tensor([float(raw[j]) - float(bias[l][last - node.positions[j]])
                                if node.prunable[j] else float("inf") for j in range(rows)])
            order = torch.sort(sig, stable=True).indices  # ties: the lower index first
            drop = set(order[: rows - target].tolist())
            keep = [j for j in range(rows) if j not in drop]
            index = torch.tensor(keep, dtype=torch.long)
            h = h[:, index]
            for m in list(node.kv):
                node.kv[m] = (node.kv[m][0][:, :, index], node.kv[m][1][:, :, index])
            node.positions = [node.positions[j] for j in keep]
            node.source = [node.source[j] for j in keep]
            node.prunable = [node.prunable[j] for j in keep]
        h = h + layer.mlp(layer.post_attention_layernorm(h))
    node.hidden = h


def merge(a, b, P, S):
    def join(x, y):
        return x[: len(x) - S] + y[P:]
    la, lb = a.hidden.shape[1], b.hidden.shape[1]
    suffix = (a.hidden[:, la - S:] + b.hidden[:, lb - S:]) / 2
    hidden = torch.cat([a.hidden[:, : la - S], b.hidden[:, P: lb - S], suffix], dim=1)
    kv = {}
    for m in a.kv:
        (ka, va), (kb, vb) = a.kv[m], b.kv[m]
        kv[m] = tuple(torch.cat([xa[:, :, : la - S], xb[:, :, P: lb - S],
                                 (xa[:, :, la - S:] + xb[:, :, lb - S:]) / 2], dim=2)
                      for xa, xb in ((ka, kb), (va, vb)))
    return Node(hidden, join(a.positions, b.positions), join(a.source, b.source),
                join(a.prunable, b.prunable), kv)


@torch.no_grad()
def homer(model, tokens, P, S, C, T, W, bias):
    L = model.config.num_hidden_layers
    N = len(tokens) - P - S
    sc = schedule(P, N, S, C, W, L)
    n, e, ends = sc["n"], sc["e"], sc["ends"]
    embed = model.model.embed_tokens

    def leaf(i):
        begin, end = min(i * e, N), min((i + 1) * e, N)
        ids = list(range(P)) + list(range(P + begin, P + end)) + list(range(P + N, P + N + S))
        base = P + (N if n == 1 else e)
        positions = list(range(P)) + [P + j for j in range(end - begin)] + [base + j for j in range(S)]
        prunable = [False] * P + [True] * (end - begin) + [False] * S
        hidden = embed(torch.tensor([[tokens[j] for j in ids]]))
        return Node(hidden, positions, ids, prunable, {})

    def leaf_tokens(i):
        return P + min((i + 1) * e, N) - min(i * e, N) + S

    def build(level, first_leaf, target):
        if level == 0:
            node = leaf(first_leaf)
            run_node(model, node, 0, ends[0], target, bias)
            return node
        right_first = first_leaf + (1 << (level - 1))
        right = leaf_tokens(right_first)
        if right < sc["Dh"]:
            tl, tr = C - (right - P - S), right
        else:
            tl = tr = sc["Dh"]
        a = build(level - 1, first_leaf, tl)
        b = build(level - 1, right_first, tr)
        node = merge(a, b, P, S)
        run_node(model, node, ends[level - 1], ends[level], target, bias)
        return node

    root = build(sc["h"], 0, min(T, P + N + S))
    logits = model.lm_head(model.model.norm(root.hidden[:, -1:]))[0, 0]
    next_position = P + (N if n == 1 else e) + S
    return root, logits, next_position, sc


@torch.no_grad()
def calibrate(model, windows):
    L = model.config.num_hidden_layers
    C = windows.shape[1]
    sums = np.zeros((L, C))
    positions = list(range(C))
    for w in windows:
        h = model.model.embed_tokens(torch.tensor([w.tolist()]))
        for l in range(L):
            layer = model.model.layers[l]
            q, k, v = qkv(model, l, h, positions)
            out, keys, scaling = attend(model, l, q, k, v)
            raw = last_row_scores(q, keys, scaling).numpy()
            sums[l] += raw[::-1]  # distance C - 1 - j
            h = h + out
            h = h + layer.mlp(layer.post_attention_layernorm(h))
    return (sums / len(windows)).astype(np.float32)


def record(name, model_dir, lengths, C, T, W, P, S, n_windows, out_dir, seed):
    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                             attn_implementation="eager").eval()
    vocab = model.config.vocab_size
    rng = np.random.default_rng(seed)
    windows = rng.integers(3, vocab, size=(n_windows, C)).astype(np.int32)
    windows[:, 0] = 1
    bias = calibrate(model, windows)
    # Sanity: one chunk, nothing pruned, is the model's own forward.
    short = [1] + rng.integers(3, vocab, size=C // 2 - 1).tolist()
    _, logits, _, _ = homer(model, short, P, S, C, C, W, bias)
    plain = model(torch.tensor([short])).logits[0, -1]
    assert torch.allclose(logits, plain, atol=1e-4), float((logits - plain).abs().max())
    tensors = {"calibration_windows": windows, "bias": bias}
    report = {"C": C, "T": T, "W": W, "P": P, "S": S, "lengths": lengths,
              "one_chunk_max_abs": float((logits - plain).abs().max())}
    for length in lengths:
        tokens = [1] + rng.integers(3, vocab, size=length - 1).tolist()
        root, logits, next_position, sc = homer(model, tokens, P, S, C, T, W, bias)
        tensors[f"prompt_{length}"] = np.array(tokens, dtype=np.int32)
        tensors[f"source_{length}"] = np.array(root.source, dtype=np.int32)
        tensors[f"positions_{length}"] = np.array(root.positions, dtype=np.int32)
        tensors[f"logits_{length}"] = logits.numpy().astype(np.float32)
        tensors[f"next_position_{length}"] = np.array([next_position], dtype=np.int32)
        report[str(length)] = {"chunks": sc["n"], "kept": len(root.source),
                               "next_position": next_position}
    save_file(tensors, os.path.join(out_dir, f"{name}.safetensors"),
              metadata={k: str(v) for k, v in report.items() if k in "CTWPS"})
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    os.makedirs(args.out, exist_ok=True)
    report = {}
    for i, case in enumerate(CASES):
        report[case[0]] = record(*case, args.out, 100 + i)
    import transformers
    report["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    with open(os.path.join(args.out, "MANIFEST.json"), "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)
    print(json.dumps(report, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
