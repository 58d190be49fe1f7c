#!/usr/bin/env python3
"""Generate the test fixtures for Tessera's C++ tests.

Creates, under --out (default: tests/fixtures):

  models/<name>/           tiny random Llama checkpoints (HF layout: config.json,
                           generation_config.json, *.safetensors) plus
                           golden.safetensors with Hugging Face transformers'
                           reference logits and greedy continuations
  rope/rope_cases.json     inv_freq / attention_scaling from transformers' own
                           RoPE init functions for several rope_scaling types
  tokenizer/               a small SentencePiece BPE model (Llama conventions)
                           and reference encodings
  MANIFEST.json            versions, seeds, greedy margins, sizes, sha256

Everything is CPU, fp32 (except the explicit bf16 reference run), seeded, and
deterministic for a given set of library versions.  The C++ tests never run
Python: they read the committed files.

Usage:  nice -n 10 python3 tools/make_fixtures.py --out tests/fixtures
"""

import argparse
import copy
import hashlib
import inspect
import io
import json
import math
import os
import platform
import shutil
import sys
import sysconfig
import time

import numpy as np
import safetensors
import safetensors.torch
import sentencepiece as spm
import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

TOOL_VERSION = "1.0.0"

# ----------------------------------------------------------------------------
# Model definitions
# ----------------------------------------------------------------------------

INIT_STD = 0.2          # std of linear / embedding weights (HF default 0.02 gives flat logits)
NORM_STD = 0.1          # RMSNorm weights = 1 + NORM_STD * randn
PROMPT_LENGTHS = (1, 7, 19)
GREEDY_STEPS = 32
MIN_GREEDY_GAP = 1e-3   # required top1 - top2 logit gap at every greedy step
MAX_SEED_TRIES = 50

MODELS = [
    dict(
        name="llama2_mha",
        seed=1001,
        prompt_seed=2001,
        max_shard_size="5MB",  # -> 2 shards + model.safetensors.index.json
        copy_tokenizer=True,
        config=dict(
            hidden_size=32, intermediate_size=160, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=4, vocab_size=32000,
            max_position_embeddings=4096, rope_theta=10000.0, rms_norm_eps=1e-5,
            tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
        ),
    ),
    dict(
        name="llama70b_gqa",
        seed=1002,
        prompt_seed=2002,
        copy_tokenizer=False,  # vocab 512 < tokenizer vocab 1000
        dtype_variants=("bf16", "f16"),
        config=dict(
            hidden_size=128, intermediate_size=256, num_hidden_layers=4,
            num_attention_heads=16, num_key_value_heads=2, vocab_size=512,
            max_position_embeddings=4096, rope_theta=10000.0, rms_norm_eps=1e-5,
            tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
        ),
    ),
    dict(
        name="codellama",
        seed=1003,
        prompt_seed=2003,
        copy_tokenizer=True,
        config=dict(
            hidden_size=32, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4, vocab_size=32016,
            max_position_embeddings=16384, rope_theta=1000000.0, rms_norm_eps=1e-5,
            tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
        ),
    ),
    dict(
        name="llama31",
        seed=1004,
        prompt_seed=2004,
        copy_tokenizer=False,  # vocab 384 < tokenizer vocab 1000
        config=dict(
            hidden_size=64, intermediate_size=192, num_hidden_layers=4,
            num_attention_heads=8, num_key_value_heads=2, head_dim=16, vocab_size=384,
            max_position_embeddings=131072, rope_theta=500000.0, rms_norm_eps=1e-6,
            rope_scaling={
                "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
            },
            tie_word_embeddings=True, bos_token_id=380, eos_token_id=[381, 382, 383],
        ),
    ),
]

# a single metadata key: safetensors serialises the metadata map in hash order,
# so more than one key makes the file bytes non-reproducible
GOLDEN_METADATA = {"format": "pt"}

DTYPES = {"bf16": (torch.bfloat16, "bfloat16"), "f16": (torch.float16, "float16")}

# ----------------------------------------------------------------------------
# Tokenizer corpus: fixed list of Python stdlib modules (present in 3.8..3.13),
# concatenated in this order and cut at CORPUS_STDLIB_BYTES (at a line boundary).
# The corpus therefore depends on the interpreter version; MANIFEST.json records
# the sha256 of every file used.  The committed tokenizer.model is the artifact.
# ----------------------------------------------------------------------------

CORPUS_STDLIB_FILES = [
    "argparse.py", "ast.py", "codecs.py", "configparser.py", "dataclasses.py",
    "difflib.py", "doctest.py", "enum.py", "ftplib.py", "functools.py",
    "imaplib.py", "inspect.py", "ipaddress.py", "locale.py", "mailbox.py",
    "optparse.py", "os.py", "pdb.py", "pickle.py", "pickletools.py",
    "platform.py", "pydoc.py", "_pydecimal.py", "_pyio.py", "shutil.py",
    "smtplib.py", "socket.py", "ssl.py", "statistics.py", "subprocess.py",
    "tarfile.py", "threading.py", "traceback.py", "turtle.py", "typing.py",
]
CORPUS_STDLIB_BYTES = 2_000_000

CORPUS_EXTRA_LINES = [
    "Le café est très bon, mais la crème brûlée est encore meilleure.",
    "À Noël, nous irons à l'église où l'on chante « Il est né le divin enfant ».",
    "Ça va ? Oui, ça va très bien, merci beaucoup ! Où est la gare ?",
    "Über den Wolken muss die Freiheit wohl grenzenlos sein, sagte der Bäcker aus Köln.",
    "Größere Straßen führen durch schöne Dörfer; die Brücke über den Fluß ist alt.",
    "El niño pequeño comió jalapeños en la montaña; ¿dónde está el señor Núñez?",
    "La canción española habla del corazón, de la pasión y de la ilusión.",
    "O coração da nação bate forte; a educação é a solução para a situação.",
    "Ελληνικά: Καλημέρα κόσμε, η γλώσσα μου έδωσαν ελληνική.",
    "Ο Σωκράτης και ο Πλάτων συζητούσαν για την αλήθεια και την ομορφιά.",
    "Русский: Привет, мир! Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Москва — столица России; Санкт-Петербург известен своими белыми ночами.",
    "Українська: Доброго ранку, як справи? Дякую, все добре.",
    "Český jazyk: Příliš žluťoučký kůň úpěl ďábelské ódy.",
    "Polski: Zażółć gęślą jaźń; Łódź i Kraków są pięknymi miastami.",
    "Türkçe: Çok güzel bir gün; İstanbul'da çay içiyoruz.",
]

ENCODING_TEXTS = [
    "Hello world! This is a plain ASCII sentence.",
    "Café, naïve façade: über señor, garçon, jalapeño.",
    "Ελληνικά και Русский текст.",
    "中文字符 and 日本語",
    "emoji 🙂🚀 and 👩\u200d💻",
    "def f(x):\n\treturn x  # ok\n",
    "   leading and trailing spaces   ",
    "multiple     spaces    between  words",
    "1234567890 and 3.14159",
    " ",
    "\n",
    "",
]

# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------


def log(*a):
    print(*a, flush=True)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def build_model(cfg_kwargs, seed):
    cfg = LlamaConfig(**copy.deepcopy(cfg_kwargs))
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.set_attn_implementation("eager")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied lm_head appears once
            if p.ndim == 1:  # the only 1-D parameters are RMSNorm weights
                p.copy_(1.0 + NORM_STD * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(INIT_STD * torch.randn(p.shape, generator=gen))
    model.eval()
    return model


def rounded_copy(model, dtype):
    """fp32 model whose weights are rounded to `dtype` and cast back to fp32."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(p.to(dtype).to(torch.float32))
    return m


@torch.no_grad()
def logits_of(model, ids):
    out = model(input_ids=ids[None].long(), use_cache=False)
    return out.logits[0].to(torch.float32).clone()


@torch.no_grad()
def greedy_of(model, ids, steps=GREEDY_STEPS):
    """Manual greedy loop: full recompute each step, never stops at EOS."""
    seq = ids.long().tolist()
    toks, min_gap = [], math.inf
    for _ in range(steps):
        last = model(input_ids=torch.tensor([seq]), use_cache=False).logits[0, -1].float()
        top2 = torch.topk(last, 2).values
        min_gap = min(min_gap, float(top2[0] - top2[1]))
        t = int(torch.argmax(last))
        toks.append(t)
        seq.append(t)
    return torch.tensor(toks, dtype=torch.int32), min_gap


def make_prompts(cfg, prompt_seed):
    gen = torch.Generator().manual_seed(prompt_seed)
    bos = cfg["bos_token_id"]
    prompts = []
    for L in PROMPT_LENGTHS:
        body = torch.randint(3, cfg["vocab_size"] - 4, (L - 1,), generator=gen)
        prompts.append(torch.cat([torch.tensor([bos]), body]).to(torch.int32))
    return prompts


def classic_config_json(path, torch_dtype):
    """Rewrite config.json in the classic on-disk form of real Llama checkpoints.

    transformers 5.x writes `rope_parameters` (with rope_theta inside) and `dtype`;
    real checkpoints carry top-level `rope_theta`, `rope_scaling` (dict or null)
    and `torch_dtype`.
    """
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    rp = cfg.pop("rope_parameters", None)
    if rp is not None:
        rp = dict(rp)
        theta = rp.pop("rope_theta", None)
        if theta is not None:
            cfg["rope_theta"] = float(theta)
        if rp.get("rope_type", "default") == "default":
            cfg["rope_scaling"] = None
        else:
            cfg["rope_scaling"] = rp
    cfg.setdefault("rope_scaling", None)
    cfg.pop("dtype", None)
    cfg["torch_dtype"] = torch_dtype
    write_json(path, dict(sorted(cfg.items())))
    return cfg


def save_checkpoint(model, out_dir, dtype, dtype_name, max_shard_size=None):
    os.makedirs(out_dir, exist_ok=True)
    kw = {}
    if max_shard_size is not None:
        kw["max_shard_size"] = max_shard_size
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
        kw["safe_serialization"] = True
    m = model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)
    m.save_pretrained(out_dir, **kw)
    return classic_config_json(os.path.join(out_dir, "config.json"), dtype_name)


def load_checkpoint(path, dtype):
    m = LlamaForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="eager").eval()
    # Copy parameters out of the (mmap'd, arbitrarily aligned) safetensors buffers: for
    # M=1 GEMMs the CPU kernel choice depends on pointer alignment, which changes the
    # last bit of a few logits.  Fresh allocations make the reload check bit-exact.
    with torch.no_grad():
        for p in m.parameters():
            p.data = p.data.clone()
    if m.config.tie_word_embeddings:
        assert m.lm_head.weight is m.model.embed_tokens.weight
    return m


# ----------------------------------------------------------------------------
# models + golden outputs
# ----------------------------------------------------------------------------


def make_model_fixtures(spec, models_dir, tok_model_path, report):
    name, cfg = spec["name"], spec["config"]
    variants = spec.get("dtype_variants", ())
    prompts = make_prompts(cfg, spec["prompt_seed"])

    for attempt in range(MAX_SEED_TRIES):
        seed = spec["seed"] + 1000 * attempt
        model = build_model(cfg, seed)
        gaps = {}
        golden = {}
        for i, ids in enumerate(prompts):
            golden[f"prompt{i}.input_ids"] = ids
            golden[f"prompt{i}.logits"] = logits_of(model, ids)
            g, gap = greedy_of(model, ids)
            golden[f"prompt{i}.greedy"] = g
            gaps[f"prompt{i}"] = gap
        vgold, vgaps = {}, {}
        for v in variants:
            rm = rounded_copy(model, DTYPES[v][0])
            vg, vgap = {}, {}
            for i, ids in enumerate(prompts):
                vg[f"prompt{i}.input_ids"] = ids
                vg[f"prompt{i}.logits_fp32compute"] = logits_of(rm, ids)
                g, gap = greedy_of(rm, ids)
                vg[f"prompt{i}.greedy"] = g
                vgap[f"prompt{i}"] = gap
            vgold[v], vgaps[v] = vg, vgap
        all_gaps = list(gaps.values()) + [x for d in vgaps.values() for x in d.values()]
        if min(all_gaps) > MIN_GREEDY_GAP:
            break
        log(f"  {name}: seed {seed} has greedy gap {min(all_gaps):.2e} <= {MIN_GREEDY_GAP}, reseeding")
    else:
        raise RuntimeError(f"{name}: no seed with a robust greedy margin")

    log(f"  {name}: seed {seed} (attempt {attempt}), min greedy gap {min(gaps.values()):.4f}")
    out_dir = os.path.join(models_dir, name)
    shutil.rmtree(out_dir, ignore_errors=True)
    disk_cfg = save_checkpoint(model, out_dir, torch.float32, "float32", spec.get("max_shard_size"))
    safetensors.torch.save_file(golden, os.path.join(out_dir, "golden.safetensors"),
                                metadata=GOLDEN_METADATA)
    if spec.get("copy_tokenizer"):
        shutil.copyfile(tok_model_path, os.path.join(out_dir, "tokenizer.model"))

    entry = dict(seed=seed, seed_attempts=attempt + 1, prompt_seed=spec["prompt_seed"],
                 min_greedy_gap=min(gaps.values()), greedy_gap_per_prompt=gaps,
                 config=disk_cfg)
    if spec.get("max_shard_size"):
        idx = os.path.join(out_dir, "model.safetensors.index.json")
        with open(idx) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        assert len(shards) >= 2, f"{name}: expected >=2 shards, got {shards}"
        entry["shards"] = shards
    report[name] = entry

    # reload check: from_pretrained must reproduce logits bit-exactly
    rl = load_checkpoint(out_dir, torch.float32)
    for i, ids in enumerate(prompts):
        assert torch.equal(logits_of(rl, ids), golden[f"prompt{i}.logits"]), f"{name}: reload mismatch"
    del rl

    for v in variants:
        tdtype, tname = DTYPES[v]
        vname = f"{name}_{v}"
        vdir = os.path.join(models_dir, vname)
        shutil.rmtree(vdir, ignore_errors=True)
        vcfg = save_checkpoint(model, vdir, tdtype, tname)
        vg = vgold[v]
        out = {}
        # fp32 compute on the stored (rounded) weights, via from_pretrained
        rl32 = load_checkpoint(vdir, torch.float32)
        for i, ids in enumerate(prompts):
            l32 = logits_of(rl32, ids)
            assert torch.equal(l32, vg[f"prompt{i}.logits_fp32compute"]), f"{vname}: reload mismatch"
        del rl32
        if v == "bf16":
            # transformers running natively in bfloat16 (as users load it)
            rl16 = load_checkpoint(vdir, tdtype)
            inv_dtype = str(rl16.model.rotary_emb.inv_freq.dtype)
            for i, ids in enumerate(prompts):
                out[f"prompt{i}.input_ids"] = vg[f"prompt{i}.input_ids"]
                out[f"prompt{i}.logits"] = logits_of(rl16, ids)
                out[f"prompt{i}.logits_fp32compute"] = vg[f"prompt{i}.logits_fp32compute"]
                out[f"prompt{i}.greedy"] = vg[f"prompt{i}.greedy"]
            diff = max(float((out[f"prompt{i}.logits"] - out[f"prompt{i}.logits_fp32compute"]).abs().max())
                       for i in range(len(prompts)))
            del rl16
        else:
            inv_dtype = None
            diff = None
            for i, ids in enumerate(prompts):
                out[f"prompt{i}.input_ids"] = vg[f"prompt{i}.input_ids"]
                out[f"prompt{i}.logits"] = vg[f"prompt{i}.logits_fp32compute"]
                out[f"prompt{i}.greedy"] = vg[f"prompt{i}.greedy"]
        safetensors.torch.save_file(out, os.path.join(vdir, "golden.safetensors"),
                                    metadata=GOLDEN_METADATA)
        ventry = dict(seed=seed, base_model=name, prompt_seed=spec["prompt_seed"],
                      min_greedy_gap=min(vgaps[v].values()), greedy_gap_per_prompt=vgaps[v],
                      config=vcfg)
        if v == "bf16":
            ventry["max_abs_diff_bf16compute_vs_fp32compute"] = diff
            ventry["bf16_run_rotary_inv_freq_dtype"] = inv_dtype
        # greedy differences vs. the fp32 base model (informational)
        ventry["greedy_equal_to_fp32_base"] = {
            f"prompt{i}": bool(torch.equal(vg[f"prompt{i}.greedy"], golden[f"prompt{i}.greedy"]))
            for i in range(len(prompts))}
        report[vname] = ventry
        log(f"  {vname}: min greedy gap {ventry['min_greedy_gap']:.4f}")


# ----------------------------------------------------------------------------
# RoPE reference
# ----------------------------------------------------------------------------

ROPE_CASES = [
    dict(name="default_theta1e4_hd64", seq_len=4096,
         config=dict(hidden_size=2048, num_attention_heads=32, rope_theta=10000.0,
                     max_position_embeddings=4096, rope_scaling=None)),
    dict(name="linear_factor4", seq_len=4096,
         config=dict(hidden_size=4096, num_attention_heads=32, rope_theta=10000.0,
                     max_position_embeddings=4096,
                     rope_scaling={"rope_type": "linear", "factor": 4.0})),
    # legacy spelling ("type" instead of "rope_type") found in older checkpoints
    dict(name="linear_factor4_legacy_type_key", seq_len=4096,
         config=dict(hidden_size=4096, num_attention_heads=32, rope_theta=10000.0,
                     max_position_embeddings=4096,
                     rope_scaling={"type": "linear", "factor": 4.0})),
    dict(name="dynamic_factor2_short", seq_len=1000,
         config=dict(hidden_size=4096, num_attention_heads=32, rope_theta=10000.0,
                     max_position_embeddings=4096,
                     rope_scaling={"rope_type": "dynamic", "factor": 2.0})),
    dict(name="dynamic_factor2_long", seq_len=3 * 4096,
         config=dict(hidden_size=4096, num_attention_heads=32, rope_theta=10000.0,
                     max_position_embeddings=4096,
                     rope_scaling={"rope_type": "dynamic", "factor": 2.0})),
    dict(name="llama3_hd128", seq_len=8192,
         config=dict(hidden_size=4096, num_attention_heads=32, head_dim=128, rope_theta=500000.0,
                     max_position_embeddings=131072,
                     rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})),
]


def make_rope_cases(out_dir):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    os.makedirs(out_dir, exist_ok=True)
    cases = []
    for case in ROPE_CASES:
        c = case["config"]
        kw = dict(c)
        rs = copy.deepcopy(kw.pop("rope_scaling"))
        if rs is not None:
            kw["rope_scaling"] = rs
        hf_cfg = LlamaConfig(num_hidden_layers=1, num_key_value_heads=c["num_attention_heads"],
                             vocab_size=32, intermediate_size=64, **kw)
        rope_type = hf_cfg.rope_parameters.get("rope_type", "default")
        if rope_type == "default":
            # transformers 5.x keeps the default init on the rotary class, not in the registry
            fn = ROPE_INIT_FUNCTIONS.get("default", LlamaRotaryEmbedding.compute_default_rope_parameters)
            inv_freq, scaling = fn(hf_cfg)
        else:
            inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope_type](hf_cfg, None, seq_len=case["seq_len"])
        cases.append(dict(
            name=case["name"],
            config=c,
            rope_type=rope_type,
            seq_len=case["seq_len"],
            inv_freq=[float(x) for x in inv_freq.to(torch.float32).tolist()],
            attention_scaling=float(scaling),
        ))
    doc = dict(
        description=("inv_freq (float32 values) and attention_scaling computed by transformers' RoPE "
                     "init functions. cos/sin at position p are cos(p*inv_freq)*attention_scaling "
                     "(HF rotate_half layout). For 'dynamic', inv_freq depends on seq_len."),
        transformers_version=transformers.__version__,
        cases=cases,
    )
    write_json(os.path.join(out_dir, "rope_cases.json"), doc)
    return [c["name"] for c in cases]


# ----------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------


def build_corpus():
    lib = sysconfig.get_paths()["stdlib"]
    lines, used, total = [], [], 0
    for fn in CORPUS_STDLIB_FILES:
        path = os.path.join(lib, fn)
        if not os.path.exists(path):
            log(f"  corpus: {fn} missing in this Python, skipped")
            continue
        with open(path, "rb") as f:
            data = f.read()
        used.append(dict(file=fn, sha256=hashlib.sha256(data).hexdigest(), bytes=len(data)))
        for line in data.decode("utf-8").splitlines():
            if total >= CORPUS_STDLIB_BYTES:
                break
            if line.strip():
                lines.append(line)
                total += len(line.encode("utf-8")) + 1
        if total >= CORPUS_STDLIB_BYTES:
            break
    # the hand-written multilingual lines are repeated so their characters are frequent enough
    lines += CORPUS_EXTRA_LINES * 20
    return lines, used, total


def make_tokenizer(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    lines, used, total = build_corpus()
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=buf,
        model_type="bpe",
        vocab_size=1000,
        byte_fallback=True,
        character_coverage=0.9995,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        add_dummy_prefix=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        split_by_unicode_script=True,
        split_by_number=True,
        split_by_whitespace=True,
        max_sentencepiece_length=16,
        max_sentence_length=4192,
        unk_surface=" \u2047 ",
        num_threads=1,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    model_path = os.path.join(out_dir, "tokenizer.model")
    with open(model_path, "wb") as f:
        f.write(buf.getvalue())
    sp = spm.SentencePieceProcessor(model_file=model_path)
    assert sp.get_piece_size() == 1000 and sp.bos_id() == 1 and sp.eos_id() == 2 and sp.unk_id() == 0
    encs = []
    for text in ENCODING_TEXTS:
        ids = sp.encode(text)
        encs.append(dict(text=text, ids=ids, pieces=[sp.id_to_piece(i) for i in ids],
                         decoded=sp.decode(ids)))
    write_json(os.path.join(out_dir, "encodings.json"), encs)
    return model_path, dict(corpus_files=used, corpus_stdlib_bytes=total,
                            corpus_lines=len(lines), vocab_size=sp.get_piece_size())


# ----------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/fixtures")
    ap.add_argument("--only", nargs="*", default=None,
                    help="only (re)generate these models (tokenizer/rope are always rebuilt)")
    args = ap.parse_args()

    t0 = time.time()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    out = args.out
    os.makedirs(out, exist_ok=True)

    log("tokenizer ...")
    tok_path, tok_info = make_tokenizer(os.path.join(out, "tokenizer"))
    log("rope ...")
    rope_names = make_rope_cases(os.path.join(out, "rope"))

    models_dir = os.path.join(out, "models")
    os.makedirs(models_dir, exist_ok=True)
    report = {}
    old_manifest = os.path.join(out, "MANIFEST.json")
    if args.only and os.path.exists(old_manifest):
        with open(old_manifest) as f:
            report = json.load(f).get("models", {})
    for spec in MODELS:
        if args.only and spec["name"] not in args.only:
            continue
        log(f"model {spec['name']} ...")
        make_model_fixtures(spec, models_dir, tok_path, report)

    files = {}
    for root, _, names in os.walk(out):
        for n in names:
            p = os.path.join(root, n)
            rel = os.path.relpath(p, out).replace(os.sep, "/")
            if rel == "MANIFEST.json":
                continue
            files[rel] = dict(bytes=os.path.getsize(p), sha256=sha256_file(p))
    manifest = dict(
        tool="tools/make_fixtures.py",
        tool_version=TOOL_VERSION,
        versions=dict(python=platform.python_version(), torch=torch.__version__,
                      transformers=transformers.__version__, sentencepiece=spm.__version__,
                      safetensors=safetensors.__version__, numpy=np.__version__),
        settings=dict(init_std=INIT_STD, norm_std=NORM_STD, prompt_lengths=list(PROMPT_LENGTHS),
                      greedy_steps=GREEDY_STEPS, min_required_greedy_gap=MIN_GREEDY_GAP,
                      attn_implementation="eager"),
        models=dict(sorted(report.items())),
        rope_cases=rope_names,
        tokenizer=tok_info,
        total_bytes=sum(v["bytes"] for v in files.values()),
        files=dict(sorted(files.items())),
    )
    write_json(old_manifest, manifest)
    log(f"done in {time.time() - t0:.1f}s, {manifest['total_bytes'] / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
