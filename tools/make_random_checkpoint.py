#!/usr/bin/env python3
"""Writes a Llama checkpoint with random weights, for benchmarks.

Only numpy is needed. The weights are N(0, 0.02) (norm weights 1), stored as BF16, F16 or F32 in a
single model.safetensors next to a Hugging Face config.json. Example (about 1.1 GB of BF16):

  python3 tools/make_random_checkpoint.py --out bench-models/llama-1b --hidden 2048 \
      --intermediate 5632 --layers 10 --heads 32 --kv-heads 4 --vocab 32000 --dtype bf16
"""
import argparse
import json
import os
import struct

import numpy as np


def to_dtype(values, dtype):
    if dtype == "f32":
        return values.astype(np.float32), "F32"
    if dtype == "f16":
        return values.astype(np.float16), "F16"
    bits = values.astype(np.float32).view(np.uint32)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16  # round to nearest even
    return rounded.astype(np.uint16), "BF16"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--intermediate", type=int, default=5632)
    p.add_argument("--layers", type=int, default=10)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--max-pos", type=int, default=4096)
    p.add_argument("--dtype", choices=["bf16", "f16", "f32"], default="bf16")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    head_dim = a.hidden // a.heads
    shapes = {"model.embed_tokens.weight": (a.vocab, a.hidden)}
    for i in range(a.layers):
        pre = f"model.layers.{i}."
        shapes[pre + "input_layernorm.weight"] = (a.hidden,)
        shapes[pre + "self_attn.q_proj.weight"] = (a.heads * head_dim, a.hidden)
        shapes[pre + "self_attn.k_proj.weight"] = (a.kv_heads * head_dim, a.hidden)
        shapes[pre + "self_attn.v_proj.weight"] = (a.kv_heads * head_dim, a.hidden)
        shapes[pre + "self_attn.o_proj.weight"] = (a.hidden, a.heads * head_dim)
        shapes[pre + "post_attention_layernorm.weight"] = (a.hidden,)
        shapes[pre + "mlp.gate_proj.weight"] = (a.intermediate, a.hidden)
        shapes[pre + "mlp.up_proj.weight"] = (a.intermediate, a.hidden)
        shapes[pre + "mlp.down_proj.weight"] = (a.hidden, a.intermediate)
    shapes["model.norm.weight"] = (a.hidden,)
    shapes["lm_head.weight"] = (a.vocab, a.hidden)

    elem = {"bf16": 2, "f16": 2, "f32": 4}[a.dtype]
    header, offset = {}, 0
    for name, shape in shapes.items():
        n = int(np.prod(shape)) * elem
        header[name] = {"dtype": {"bf16": "BF16", "f16": "F16", "f32": "F32"}[a.dtype],
                        "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)

    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    with open(os.path.join(a.out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for name, shape in shapes.items():
            if name.endswith("norm.weight"):
                values = np.ones(shape, dtype=np.float32)
            else:
                values = rng.standard_normal(shape, dtype=np.float32) * 0.02
            f.write(to_dtype(values, a.dtype)[0].tobytes())
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": a.hidden, "intermediate_size": a.intermediate,
        "num_hidden_layers": a.layers, "num_attention_heads": a.heads,
        "num_key_value_heads": a.kv_heads, "vocab_size": a.vocab,
        "max_position_embeddings": a.max_pos, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "rope_scaling": None, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
        "hidden_act": "silu",
        "torch_dtype": {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}[a.dtype],
    }
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    print(f"wrote {a.out}: {offset / 1e9:.2f} GB of {a.dtype} weights")


if __name__ == "__main__":
    main()
