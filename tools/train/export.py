#!/usr/bin/env python3
"""Export a training checkpoint to models/<name>/ in the Hugging Face layout.

Writes config.json (classic on-disk Llama fields: rope_theta / rope_scaling,
torch_dtype, plus tessera_* keys that describe the trained early exits),
generation_config.json, model.safetensors (bfloat16, HF tensor names),
tokenizer.model and training_state.json (step, tokens, CPU time, interim flag).
"""
import argparse
import json
import os
import shutil

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workdir", default="/root/tessera-train")
    ap.add_argument("--ckpt", default="", help="default: <workdir>/ckpt/ckpt_latest.pt")
    ap.add_argument("--out", default=os.path.join(REPO, "models", "tessera-code-tiny"))
    args = ap.parse_args()

    path = args.ckpt or os.path.join(args.workdir, "ckpt", "ckpt_latest.pt")
    ck = torch.load(path, map_location="cpu", weights_only=False)
    cfg, targs, state = ck["config"], ck["args"], ck["state"]
    os.makedirs(args.out, exist_ok=True)

    sd = {}
    for k, v in ck["model"].items():
        if cfg.get("tie_word_embeddings") and k == "lm_head.weight":
            continue  # tied: HF convention stores only the embedding
        sd[k] = v.detach().to(torch.bfloat16).contiguous()
    rope = cfg.get("rope_parameters") or {}
    rope_theta = float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    rope_type = rope.get("rope_type", "default")
    exits = [int(e) for e in str(targs.get("exits", "")).split(",") if e.strip()]
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": cfg["hidden_act"],
        "hidden_size": cfg["hidden_size"],
        "intermediate_size": cfg["intermediate_size"],
        "num_attention_heads": cfg["num_attention_heads"],
        "num_key_value_heads": cfg["num_key_value_heads"],
        "num_hidden_layers": cfg["num_hidden_layers"],
        "head_dim": cfg["hidden_size"] // cfg["num_attention_heads"],
        "max_position_embeddings": cfg["max_position_embeddings"],
        "rms_norm_eps": cfg["rms_norm_eps"],
        "rope_theta": rope_theta,
        "rope_scaling": None if rope_type == "default" else rope,
        "vocab_size": cfg["vocab_size"],
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": None,
        "tie_word_embeddings": bool(cfg.get("tie_word_embeddings", False)),
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "initializer_range": cfg.get("initializer_range", 0.02),
        "use_cache": True,
        "torch_dtype": "bfloat16",
        # Early exits trained with the shared final norm + LM head. A value l means
        # "exit after l decoder blocks" (FREE's L_s convention; blocks 0..l-1 run),
        # i.e. logits = lm_head(norm(hidden_states[l])).
        "tessera_exit_layers": exits,
        "tessera_exit_loss": "depth-weighted CE over exits + final: sum_l l*CE_l / sum_l l",
    }
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    gen = {"bos_token_id": 1, "eos_token_id": 2, "do_sample": False}
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump(gen, f, indent=2)
        f.write("\n")
    save_file(sd, os.path.join(args.out, "model.safetensors"),
              metadata={"format": "pt"})
    os.chmod(os.path.join(args.out, "model.safetensors"), 0o644)
    shutil.copyfile(os.path.join(args.workdir, "tokenizer", "tokenizer.model"),
                    os.path.join(args.out, "tokenizer.model"))
    ts = {"checkpoint": os.path.abspath(path), "step": state["step"], "total_steps": targs["steps"],
          "tokens": state["tokens"], "train_cpu_seconds": round(state["train_seconds"], 1),
          "interim": state["step"] < targs["steps"], "train_args": targs,
          "overrides": schedule_overrides(os.path.join(args.workdir, "train_log.jsonl"))}
    with open(os.path.join(args.out, "training_state.json"), "w") as f:
        json.dump(ts, f, indent=1)
        f.write("\n")
    size = os.path.getsize(os.path.join(args.out, "model.safetensors"))
    print(f"exported step {state['step']}/{targs['steps']} to {args.out}: "
          f"{len(sd)} tensors, model.safetensors {size/1e6:.1f} MB")


def schedule_overrides(log_path):
    """[{"from_step", "overrides"}] for every resumed run that changed the schedule (--override)."""
    out = []
    if not os.path.exists(log_path):
        return out
    with open(log_path) as f:
        for line in f:
            d = json.loads(line)
            if d.get("event") == "start" and d.get("overrides"):
                out.append({"from_step": d["step"], "overrides": d["overrides"]})
    return out


if __name__ == "__main__":
    main()
