#!/usr/bin/env python3
"""Record transformers' outputs past max_position_embeddings for the long-context tests.

Writes, under --out (default: tests/fixtures/long_context), one tiny random Llama per
rope_scaling type (dynamic, linear, llama3, yarn), all with max_position_embeddings = 16 and the
same weights:

  <type>/config.json, generation_config.json, model.safetensors   (classic on-disk config form)
  <type>/golden.safetensors   prompt{i}.input_ids (int32 [L]), prompt{i}.logits (f32 [L, vocab],
                              one forward over the whole prompt, eager attention) and
                              prompt{i}.greedy (int32 [8], greedy decoding with the KV cache)
  rope_yarn.json              inv_freq and attention_scaling of YaRN's optional parameters
  MANIFEST.json               versions, seeds, greedy margins, sizes and sha256 of every file

prompt0 has 40 tokens (past the limit from the start); prompt1 has 12, and its 8 greedy tokens
cross the limit at position 16.

The greedy tokens come from a manual loop over transformers' KV cache (what `generate` does),
not from recomputing the whole sequence each step: with dynamic NTK scaling the rotary
frequencies depend on the current length, and cached keys keep the rotation they were written
with, so the two differ past the limit. transformers keeps the largest length seen in the
rotary module (`max_seq_len_cached`); the module is reset before every prompt so each prompt
runs as in a fresh process.

Usage:  nice -n 10 python3 tools/make_long_context_fixtures.py --out tests/fixtures/long_context
"""

import argparse
import copy
import json
import math
import os
import platform
import shutil

import safetensors
import safetensors.torch
import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

from make_fixtures import sha256_file, write_json

TOOL_VERSION = "1.0.0"
INIT_STD = 0.2
NORM_STD = 0.1
PROMPT_LENGTHS = (40, 12)
GREEDY_STEPS = 8
MIN_GREEDY_GAP = 1e-3
MAX_SEED_TRIES = 50
SEED = 3001
PROMPT_SEED = 4001

BASE_CONFIG = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, vocab_size=256, max_position_embeddings=16,
    rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1,
    eos_token_id=2,
)

SCALINGS = {
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "linear": {"rope_type": "linear", "factor": 4.0},
    # original_max_position_embeddings = 16 puts head_dim 16's wavelengths (6.3 .. 2e4) in all
    # three llama3 bands: unscaled, smoothed and divided by factor.
    "llama3": {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
    # beta_fast 32 / beta_slow 1 rotations of 16 positions put the ramp over dimensions 0..4.
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
}

# YaRN's optional parameters, checked on inv_freq and attention_scaling alone (rope_yarn.json).
YARN_ROPE_CASES = [
    dict(name="defaults", head_dim=128, rope_theta=10000.0, max_position_embeddings=32768,
         rope_scaling={"rope_type": "yarn", "factor": 8.0,
                       "original_max_position_embeddings": 4096}),
    dict(name="no_original_uses_max_position_embeddings", head_dim=64, rope_theta=500000.0,
         max_position_embeddings=8192, rope_scaling={"rope_type": "yarn", "factor": 4.0}),
    dict(name="betas_truncate_false", head_dim=128, rope_theta=1000000.0,
         max_position_embeddings=131072,
         rope_scaling={"rope_type": "yarn", "factor": 4.0, "beta_fast": 16, "beta_slow": 2,
                       "truncate": False, "original_max_position_embeddings": 32768}),
    dict(name="mscale_all_dim", head_dim=64, rope_theta=10000.0, max_position_embeddings=163840,
         rope_scaling={"rope_type": "yarn", "factor": 40.0, "mscale": 1.0,
                       "mscale_all_dim": 0.707, "original_max_position_embeddings": 4096}),
    dict(name="explicit_attention_factor", head_dim=128, rope_theta=10000.0,
         max_position_embeddings=16384,
         rope_scaling={"rope_type": "yarn", "factor": 4.0, "attention_factor": 1.25,
                       "original_max_position_embeddings": 4096}),
]

GOLDEN_METADATA = {"format": "pt"}


def build_model(cfg_kwargs, seed):
    model = LlamaForCausalLM(LlamaConfig(**copy.deepcopy(cfg_kwargs)))
    model.set_attn_implementation("eager")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.ndim == 1:  # RMSNorm weights
                p.copy_(1.0 + NORM_STD * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(INIT_STD * torch.randn(p.shape, generator=gen))
    return model.eval()


def reset_rotary(model):
    """Forget the longest length seen (dynamic NTK keeps it in the module)."""
    rot = model.model.rotary_emb
    if hasattr(rot, "original_inv_freq"):
        rot.register_buffer("inv_freq", rot.original_inv_freq.clone(), persistent=False)
    if hasattr(rot, "original_max_seq_len"):
        rot.max_seq_len_cached = rot.original_max_seq_len


@torch.no_grad()
def logits_of(model, ids):
    reset_rotary(model)
    return model(input_ids=ids[None].long(), use_cache=False).logits[0].float().clone()


@torch.no_grad()
def cached_greedy_of(model, ids, steps=GREEDY_STEPS):
    """Greedy decoding over the KV cache; never stops at EOS. Returns (tokens, min top-2 gap)."""
    reset_rotary(model)
    out = model(input_ids=ids[None].long(), use_cache=True)
    past, last = out.past_key_values, out.logits[0, -1].float()
    toks, min_gap = [], math.inf
    for step in range(steps):
        top2 = torch.topk(last, 2).values
        min_gap = min(min_gap, float(top2[0] - top2[1]))
        t = int(torch.argmax(last))
        toks.append(t)
        if step + 1 == steps:
            break
        pos = torch.tensor([[len(ids) + step]])
        out = model(input_ids=torch.tensor([[t]]), past_key_values=past, position_ids=pos,
                    use_cache=True)
        past, last = out.past_key_values, out.logits[0, -1].float()
    return torch.tensor(toks, dtype=torch.int32), min_gap


def make_prompts(cfg):
    gen = torch.Generator().manual_seed(PROMPT_SEED)
    prompts = []
    for length in PROMPT_LENGTHS:
        body = torch.randint(3, cfg["vocab_size"], (length - 1,), generator=gen)
        prompts.append(torch.cat([torch.tensor([cfg["bos_token_id"]]), body]).to(torch.int32))
    return prompts


def classic_config_json(path):
    """config.json as real checkpoints carry it: rope_theta and rope_scaling at the top level."""
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    rp = dict(cfg.pop("rope_parameters"))
    cfg["rope_theta"] = float(rp.pop("rope_theta"))
    cfg["rope_scaling"] = rp
    cfg.pop("dtype", None)
    cfg["torch_dtype"] = "float32"
    write_json(path, dict(sorted(cfg.items())))
    return cfg


def record(seed, prompts):
    """Goldens of every scaling type for one seed, and the smallest greedy margin."""
    goldens, gaps = {}, {}
    for name, scaling in SCALINGS.items():
        model = build_model(dict(BASE_CONFIG, rope_scaling=copy.deepcopy(scaling)), seed)
        golden = {}
        for i, ids in enumerate(prompts):
            golden[f"prompt{i}.input_ids"] = ids
            golden[f"prompt{i}.logits"] = logits_of(model, ids)
            golden[f"prompt{i}.greedy"], gaps[f"{name}.prompt{i}"] = cached_greedy_of(model, ids)
        goldens[name] = (model, golden)
    return goldens, gaps


def yarn_rope_cases():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    cases = []
    for case in YARN_ROPE_CASES:
        cfg = LlamaConfig(hidden_size=case["head_dim"] * 4, num_attention_heads=4,
                          head_dim=case["head_dim"], num_key_value_heads=4, num_hidden_layers=1,
                          vocab_size=32, intermediate_size=64, rope_theta=case["rope_theta"],
                          max_position_embeddings=case["max_position_embeddings"],
                          rope_scaling=copy.deepcopy(case["rope_scaling"]))
        inv_freq, scaling = ROPE_INIT_FUNCTIONS["yarn"](cfg, None)
        cases.append(dict(case, inv_freq=[float(x) for x in inv_freq.float().tolist()],
                          attention_scaling=float(scaling)))
    return cases


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/fixtures/long_context")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()

    prompts = make_prompts(BASE_CONFIG)
    for attempt in range(MAX_SEED_TRIES):
        seed = SEED + 1000 * attempt
        goldens, gaps = record(seed, prompts)
        if min(gaps.values()) > MIN_GREEDY_GAP:
            break
        print(f"seed {seed}: greedy gap {min(gaps.values()):.2e}, reseeding", flush=True)
    else:
        raise RuntimeError("no seed with a robust greedy margin")

    os.makedirs(args.out, exist_ok=True)
    report = {}
    for name, (model, golden) in goldens.items():
        out_dir = os.path.join(args.out, name)
        shutil.rmtree(out_dir, ignore_errors=True)
        model.save_pretrained(out_dir)
        disk_cfg = classic_config_json(os.path.join(out_dir, "config.json"))
        safetensors.torch.save_file(golden, os.path.join(out_dir, "golden.safetensors"),
                                    metadata=GOLDEN_METADATA)
        # The saved checkpoint must reproduce the logits.
        reloaded = LlamaForCausalLM.from_pretrained(out_dir, attn_implementation="eager").eval()
        for i, ids in enumerate(prompts):
            diff = float((logits_of(reloaded, ids) - golden[f"prompt{i}.logits"]).abs().max())
            assert diff < 1e-5, f"{name}: reload differs by {diff}"
        report[name] = dict(rope_scaling=disk_cfg["rope_scaling"],
                            min_greedy_gap={k: v for k, v in gaps.items() if k.startswith(name)})
        greedy = [golden[f"prompt{i}.greedy"].tolist() for i in range(len(prompts))]
        print(f"{name}: seed {seed}, greedy {greedy}")

    write_json(os.path.join(args.out, "rope_yarn.json"), dict(
        description=("inv_freq (float32 values) and attention_scaling from transformers' "
                     "_compute_yarn_parameters for YaRN's optional parameters"),
        transformers_version=transformers.__version__, cases=yarn_rope_cases()))

    files = {}
    for root, _, names in os.walk(args.out):
        for n in sorted(names):
            p = os.path.join(root, n)
            rel = os.path.relpath(p, args.out).replace(os.sep, "/")
            if rel != "MANIFEST.json":
                files[rel] = dict(bytes=os.path.getsize(p), sha256=sha256_file(p))
    write_json(os.path.join(args.out, "MANIFEST.json"), dict(
        tool="tools/make_long_context_fixtures.py", tool_version=TOOL_VERSION,
        versions=dict(python=platform.python_version(), torch=torch.__version__,
                      transformers=transformers.__version__, safetensors=safetensors.__version__),
        settings=dict(seed=seed, prompt_seed=PROMPT_SEED, prompt_lengths=list(PROMPT_LENGTHS),
                      greedy_steps=GREEDY_STEPS, greedy="KV cache", init_std=INIT_STD,
                      norm_std=NORM_STD, min_required_greedy_gap=MIN_GREEDY_GAP,
                      attn_implementation="eager", base_config=BASE_CONFIG),
        models=report, files=dict(sorted(files.items()))))


if __name__ == "__main__":
    main()
