"""Records transformers' logits for decoding after KV-cache entries were dropped.

For a fixture model, a prompt of P tokens is prefilled (transformers' own forward, eager
attention, F32) and its per-layer key/value cache (keys already rotated at their positions) is
pruned to a keep-set of entries, the same for every layer or one per layer. Then C continuation
tokens at positions P .. P+C-1 run through the decoder layers of transformers' modules, each layer
attending to its pruned cache plus the continuation (causal). The logits of the continuation
rows are what Tessera must reproduce after KvCache::Compact.

Sanity check before anything is written: keeping every entry reproduces the model's own forward
over prompt + continuation.

    python3 tools/reference/kv_compaction.py --out tests/fixtures/kv_compaction
"""
import os

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import LlamaForCausalLM
from llama_layers import head, record_all, run_layers

MODELS = ["llama2_mha", "llama70b_gqa"]
PROMPT_LEN = 24
CONT_LEN = 4


def prefill_cache(model, prompt):
    """Per layer (K, V) of the prompt, [1, kv_heads, P, head_dim], keys rotated."""
    out = model(prompt, use_cache=True)
    cache = out.past_key_values
    return [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]


def continue_with_cache(model, kv, keeps, cont, first_pos):
    """Logits [C, vocab] of `cont` at positions first_pos.. attending to kv[l] pruned to keeps[l]."""
    c = cont.shape[1]
    past = {}
    for i, keep in enumerate(keeps):
        index = torch.tensor(keep, dtype=torch.long)
        past[i] = (kv[i][0][:, :, index], kv[i][1][:, :, index])
    h = model.model.embed_tokens(cont)
    h = run_layers(model, h, list(range(first_pos, first_pos + c)), range(len(keeps)), past)
    return head(model, h)


def record(model_dir, name, out_dir, seed):
    model = LlamaForCausalLM.from_pretrained(
        model_dir, torch_dtype=torch.float32, attn_implementation="eager").eval()
    cfg = model.config
    rng = np.random.default_rng(seed)
    prompt_ids = [cfg.bos_token_id] + list(rng.integers(3, cfg.vocab_size, PROMPT_LEN - 1))
    cont_ids = list(rng.integers(3, cfg.vocab_size, CONT_LEN))
    prompt = torch.tensor([prompt_ids], dtype=torch.long)
    cont = torch.tensor([cont_ids], dtype=torch.long)
    layers = cfg.num_hidden_layers
    with torch.no_grad():
        kv = prefill_cache(model, prompt)
        full = model(torch.cat([prompt, cont], dim=1)).logits[0, PROMPT_LEN:]
        everything = [list(range(PROMPT_LEN))] * layers
        check = continue_with_cache(model, kv, everything, cont, PROMPT_LEN)
        err = (check - full).norm() / full.norm()
        assert err < 1e-5, f"{name}: the manual layer loop differs from the model by {err}"
        uniform = sorted(rng.choice(PROMPT_LEN, 11, replace=False).tolist())
        per_layer = [sorted(rng.choice(PROMPT_LEN, int(rng.integers(5, PROMPT_LEN - 2)),
                                       replace=False).tolist()) for _ in range(layers)]
        tensors = {
            "prompt_ids": torch.tensor(prompt_ids, dtype=torch.int32),
            "continuation_ids": torch.tensor(cont_ids, dtype=torch.int32),
        }
        for case, keeps in (("uniform", [uniform] * layers), ("per_layer", per_layer)):
            logits = continue_with_cache(model, kv, keeps, cont, PROMPT_LEN)
            tensors[f"{case}.logits"] = logits.contiguous()
            for i, keep in enumerate(keeps):
                tensors[f"{case}.keep.{i}"] = torch.tensor(keep, dtype=torch.int32)
    os.makedirs(out_dir, exist_ok=True)
    save_file(tensors, os.path.join(out_dir, f"{name}.safetensors"),
              metadata={"tool": "tools/reference/kv_compaction.py", "seed": str(seed),
                        "full_keep_check_rel_l2": f"{err:.3e}"})
    return float(err)


if __name__ == "__main__":
    record_all(__doc__, MODELS, record, first_seed=7000)
