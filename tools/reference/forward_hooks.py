"""Records transformers' outputs for the runtime's forward hooks: a head after any layer, and
rows dropped between layers.

For each fixture model and a 12-token prompt:
- `exit.{l}.logits` [12, vocab]: transformers' model truncated to l + 1 layers (a LlamaForCausalLM
  built with num_hidden_layers = l + 1 and the checkpoint's weights), with the same final norm
  and LM head: what an exit after layer l must give.
- `keep.rows`, `keep.logits` [len(rows), vocab]: all rows through layers 0 and 1, then only
  `keep.rows` (at their original positions, attending causally among themselves) through the
  remaining layers, through the head.

    python3 tools/reference/forward_hooks.py --out tests/fixtures/forward_hooks
"""
import copy
import os

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import LlamaForCausalLM

from llama_layers import head, record_all, run_layers

MODELS = ["llama2_mha", "llama70b_gqa"]
PROMPT_LEN = 12
KEEP_AFTER_LAYER = 1


@torch.no_grad()
def truncated_logits(model, ids, layers):
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = layers
    small = LlamaForCausalLM(config).eval()
    missing, unexpected = small.load_state_dict(model.state_dict(), strict=False)
    assert not missing, missing
    return small(ids).logits[0]


@torch.no_grad()
def record(model_dir, name, out_dir, seed):
    model = LlamaForCausalLM.from_pretrained(
        model_dir, torch_dtype=torch.float32, attn_implementation="eager").eval()
    cfg = model.config
    rng = np.random.default_rng(seed)
    prompt = [cfg.bos_token_id] + [int(t) for t in rng.integers(3, cfg.vocab_size, PROMPT_LEN - 1)]
    ids = torch.tensor([prompt], dtype=torch.long)
    tensors = {"prompt_ids": torch.tensor(prompt, dtype=torch.int32)}
    for l in range(cfg.num_hidden_layers):
        tensors[f"exit.{l}.logits"] = truncated_logits(model, ids, l + 1).contiguous()
    full = model(ids).logits[0]
    err = float((tensors[f"exit.{cfg.num_hidden_layers - 1}.logits"] - full).norm() / full.norm())
    assert err == 0.0, f"{name}: the untruncated copy differs from the model by {err}"
    # Rows dropped after layer KEEP_AFTER_LAYER: the manual layer loop must first reproduce the
    # model when every row is kept.
    positions = list(range(PROMPT_LEN))
    h = run_layers(model, model.model.embed_tokens(ids), positions, range(KEEP_AFTER_LAYER + 1))
    rest = range(KEEP_AFTER_LAYER + 1, cfg.num_hidden_layers)
    check = head(model, run_layers(model, h, positions, rest))
    check_err = float((check - full).norm() / full.norm())
    assert check_err < 1e-5, f"{name}: the manual layer loop differs by {check_err}"
    keep = sorted(rng.choice(PROMPT_LEN - 1, 6, replace=False).tolist()) + [PROMPT_LEN - 1]
    index = torch.tensor(keep, dtype=torch.long)
    tensors["keep.rows"] = torch.tensor(keep, dtype=torch.int32)
    tensors["keep.logits"] = head(model, run_layers(model, h[:, index], keep, rest)).contiguous()
    os.makedirs(out_dir, exist_ok=True)
    save_file(tensors, os.path.join(out_dir, f"{name}.safetensors"),
              metadata={"tool": "tools/reference/forward_hooks.py", "seed": str(seed),
                        "keep_after_layer": str(KEEP_AFTER_LAYER)})
    return {"manual_loop_rel_l2": check_err}


if __name__ == "__main__":
    record_all(__doc__, MODELS, record, first_seed=8000)
