"""Decoder layers of a transformers Llama run one by one, for references the model's own forward
cannot express: a key/value cache pruned per layer, or rows dropped between layers.

Each layer uses transformers' own modules (norms, projections, rotary embedding, MLP); only the
attention's choice of keys is made here: each query attends to `past` (already rotated keys and
values of that layer, all visible) and causally to the rows passed in.
"""
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv


@torch.no_grad()
def run_layers(model, h, positions, layers, past=None):
    """h [1, n, dim] through model.model.layers[i] for i in `layers`, rows at `positions`.

    past: None, or per layer index a (keys, values) pair [1, kv_heads, m, head_dim] that every row
    also attends to. Returns the hidden states [1, n, dim] after the last of `layers`.
    """
    m = model.model
    n = h.shape[1]
    position_ids = torch.tensor([positions], dtype=torch.long)
    cos, sin = m.rotary_emb(h, position_ids)
    for i in layers:
        layer = m.layers[i]
        attn = layer.self_attn
        residual = h
        x = layer.input_layernorm(h)
        hd = attn.head_dim
        q = attn.q_proj(x).view(1, n, -1, hd).transpose(1, 2)
        k = attn.k_proj(x).view(1, n, -1, hd).transpose(1, 2)
        v = attn.v_proj(x).view(1, n, -1, hd).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        n_past = 0
        if past is not None and past.get(i) is not None:
            k = torch.cat([past[i][0], k], dim=2)
            v = torch.cat([past[i][1], v], dim=2)
            n_past = past[i][0].shape[2]
        keys = repeat_kv(k, attn.num_key_value_groups)
        values = repeat_kv(v, attn.num_key_value_groups)
        scores = torch.matmul(q, keys.transpose(2, 3)) * attn.scaling
        mask = torch.zeros(n, n_past + n)
        for j in range(n):
            mask[j, n_past + j + 1:] = float("-inf")
        probs = torch.softmax(scores + mask, dim=-1, dtype=torch.float32)
        out = torch.matmul(probs, values).transpose(1, 2).reshape(1, n, -1)
        h = residual + attn.o_proj(out)
        residual = h
        h = residual + layer.mlp(layer.post_attention_layernorm(h))
    return h


def head(model, h):
    """Final norm and LM head: logits [n, vocab] of h [1, n, dim]."""
    return model.lm_head(model.model.norm(h))[0]


def record_all(doc, models, record, first_seed):
    """The command line of a reference tool: record(model_dir, name, out_dir, seed) for each
    fixture model, then MANIFEST.json with each model's report and the library versions."""
    import argparse
    import json
    import os

    import transformers

    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", default="tests/fixtures/models")
    args = ap.parse_args()
    torch.manual_seed(0)
    report = {}
    for i, name in enumerate(models):
        report[name] = record(os.path.join(args.models, name), name, args.out, first_seed + i)
    report["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    with open(os.path.join(args.out, "MANIFEST.json"), "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)
    print(json.dumps(report, indent=1, sort_keys=True))
