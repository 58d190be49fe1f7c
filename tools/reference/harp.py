"""Records HARP (hesitation-aware reframing) decoding on transformers for the embedded model
models/tessera-code-tiny, greedy, batch 1, for the runtime's HARP tests (shared/specs/harp.md
§2, §6, §8).

Semantics, per prompt (BOS + the SentencePiece ids of the text) and setting (theta in bits,
delta, beta = the vanilla weight, seed), with request_id = the prompt's index:
- Each step runs the model on the whole current sequence x[0..T-1] (prompt plus the tokens
  emitted so far; no KV cache). The first step is the prompt itself and is checked like the
  others. 16 new tokens; EOS is an ordinary token, decoding does not stop.
- Vanilla logits l: the float32 logits at the last position. Entropy in bits, in float64 from
  them: p = softmax(l), Hb = -sum p * log2(p + 1e-15). The step hesitates iff Hb > theta,
  strictly, with theta rounded to float32 first.
- On a hesitating step: E = the input embeddings of x [T, H] (float32); the mask M drops element
  (p, h) of E, setting it to exactly 0.0, iff u < delta (delta rounded to float32), kept elements
  unchanged (no 1/(1 - delta) rescaling); the reframed logits lr are those of the model run on
  inputs_embeds = E * M, last position; mixed = l + (1 - beta) * (lr - l) in float32 (the
  runtime's form; it is checked to be within 1e-6, and one ulp of the operands, of
  beta * l + (1 - beta) * lr). The token is argmax(mixed), else argmax(l); ties go to the
  smaller id.
- Mask generator (§6): key64 = splitmix64(splitmix64(seed) ^ request_id), Philox4x32-10 key
  (key64 & 0xffffffff, key64 >> 32); for position p, hidden index h, in the pass that predicts
  token index t (= T): counter (h // 4, p, t, 0x4852), word = output[h % 4],
  u = (word >> 8) * 2^-24. Implemented here twice, on Python ints (one element at a time) and
  vectorised on numpy uint64; both must agree and pass Random123's known answers.

Settings: A (theta 1.0, delta 0.2, beta 0.5), B (theta 2.0, delta 0.1, beta 0.5), C (theta 1.0,
delta 0.2, beta 0.0), D (as A with seed 11); seed 7 elsewhere; 5 code prompts.

Writes under --out:
- harp_reference.json: the settings, the prompts, the plain greedy continuation of each prompt
  (theta = +inf), one run per (setting, prompt) with the emitted ids and, per step, the entropy,
  whether it hesitated and the vanilla argmax; the smallest margins per setting and overall.
- harp_logits.safetensors: for setting A and each prompt i in LOGITS_PROMPTS, `A.p{i}.mixed`
  [16, vocab] (the logits that pick each token: mixed on hesitating steps, vanilla otherwise)
  and `A.p{i}.reframed` [16, vocab] (zeros on steps that do not hesitate), float32; masks
  `mask.seed{s}.req{r}.t{t}.delta{d}` [t, H] uint8 (1 = dropped) for positions 0..t-1 of the
  pass that predicts token index t.
- MANIFEST.json: tool, library versions, settings, the checks below, the margins, and the size
  and sha256 of the two files above.

Checks before anything is written: the Philox known answers; the scalar and vectorised masks
agree on every element of the recorded masks; the drop rate over >= 1e6 elements is within 0.5%
of delta, and delta = 0 drops nothing; the model on the unmasked input embeddings gives the same
logits as on the ids; every entropy is at least 1e-3 bits from theta and every emitted argmax
leads the runner-up logit by at least 1e-3; every setting has steps that hesitate and steps that
do not; theta = +inf reproduces transformers' generate (greedy, KV cache).

    python3 tools/reference/harp.py --out tests/fixtures/harp
"""
import argparse
import json
import math
import os
import platform
import sys

import numpy as np
import safetensors
import sentencepiece as spm
import torch
import transformers
from safetensors.torch import save_file
from transformers import GenerationConfig

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from make_fixtures import sha256_file  # noqa: E402
from early_exit import argmax, dumps, load_model, logit_gap  # noqa: E402

TOOL = "tools/reference/harp.py"
OUTPUTS = ["harp_reference.json", "harp_logits.safetensors"]
MODEL_DIR = "models/tessera-code-tiny"
NEW_TOKENS = 16
# Picked so that every entropy is at least MIN_MARGIN from theta and every emitted argmax leads
# the runner-up by at least MIN_LOGIT_GAP, in every setting.
PROMPTS = [
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "import os\n\nclass ",
    "for i in range(10):\n    total = 0\n    for j in range(i):\n",
    "def add(a, b):\n    return ",
    "with open(path) as f:\n    for line in f:\n",
]
SETTINGS = [
    dict(name="A", theta_bits=1.0, delta=0.2, beta_vanilla=0.5, seed=7),
    dict(name="B", theta_bits=2.0, delta=0.1, beta_vanilla=0.5, seed=7),
    dict(name="C", theta_bits=1.0, delta=0.2, beta_vanilla=0.0, seed=7),
    dict(name="D", theta_bits=1.0, delta=0.2, beta_vanilla=0.5, seed=11),
]
LOGITS_SETTING = "A"
LOGITS_PROMPTS = [0, 1, 2]  # all prompts would take the file past 2 MB
MASKS = [dict(seed=7, request_id=1, t=5, delta=0.2), dict(seed=7, request_id=3, t=40, delta=0.5)]
MIN_MARGIN = 1e-3       # |Hb - theta|: decisions closer than this may differ between layouts
MIN_LOGIT_GAP = 1e-3
ENTROPY_EPS = 1e-15
STREAM_HARP = 0x4852    # counter word 3: (reframe_idx << 16) | STREAM_HARP, reframe_idx = 0
DROP_RATE_ROWS = 4096   # 4096 x 256 >= 1e6 elements for the drop-rate check
DROP_RATE_TOL = 0.005
MIX_TOL = 1e-6          # the runtime's mix against beta * l + (1 - beta) * lr
EMBEDS_TOL = 0.0        # the unmasked inputs_embeds pass must give the ids' logits bitwise

MASK64 = (1 << 64) - 1
MASK32 = (1 << 32) - 1
PHILOX_M0, PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85
# Random123's known answers for philox4x32-10: (counter, key, output)
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((MASK32,) * 4, (MASK32,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]




# ---------------------------------------------------------------------------------------------
# Mask generator, on Python ints (one Philox call at a time)

def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def harp_key(seed, request_id):
    key64 = splitmix64(splitmix64(seed) ^ request_id)
    return key64 & MASK32, key64 >> 32


def philox_scalar(counter, key):
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(10):
        p0 = PHILOX_M0 * c0
        p1 = PHILOX_M1 * c2
        hi0, lo0 = p0 >> 32, p0 & MASK32
        hi1, lo1 = p1 >> 32, p1 & MASK32
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + PHILOX_W0) & MASK32, (k1 + PHILOX_W1) & MASK32
    return c0, c1, c2, c3


def drop_scalar(seed, request_id, t, p, h, delta32):
    word = philox_scalar((h // 4, p, t, STREAM_HARP), harp_key(seed, request_id))[h % 4]
    return (word >> 8) * 2.0 ** -24 < delta32


# ---------------------------------------------------------------------------------------------
# Mask generator, vectorised on numpy uint64 (32-bit values; products fit in 64 bits)

def philox_np(c0, c1, c2, c3, k0, k1):
    c = [np.asarray(v, dtype=np.uint64) for v in np.broadcast_arrays(c0, c1, c2, c3)]
    m32 = np.uint64(MASK32)
    s32 = np.uint64(32)
    k0, k1 = np.uint64(k0), np.uint64(k1)
    for _ in range(10):
        p0 = np.uint64(PHILOX_M0) * c[0]
        p1 = np.uint64(PHILOX_M1) * c[2]
        c = [(p1 >> s32) ^ c[1] ^ k0, p1 & m32, (p0 >> s32) ^ c[3] ^ k1, p0 & m32]
        k0 = (k0 + np.uint64(PHILOX_W0)) & m32
        k1 = (k1 + np.uint64(PHILOX_W1)) & m32
    return c


def drop_mask(seed, request_id, t, positions, hidden, delta32):
    """bool [positions, hidden]: True where the element of E is dropped in the pass that
    predicts token index t."""
    assert hidden % 4 == 0
    k0, k1 = harp_key(seed, request_id)
    groups = np.arange(hidden // 4, dtype=np.uint64)[None, :]
    pos = np.arange(positions, dtype=np.uint64)[:, None]
    words = philox_np(groups, pos, np.uint64(t), np.uint64(STREAM_HARP), k0, k1)
    words = np.stack(words, axis=-1).reshape(positions, hidden)  # lane h % 4
    u = (words >> np.uint64(8)).astype(np.float64) * 2.0 ** -24
    return u < delta32


def check_generator(hidden):
    """The known answers, the two generators against each other, the drop rate."""
    for counter, key, want in PHILOX_KAT:
        got = philox_scalar(counter, key)
        assert got == want, (counter, key, [hex(v) for v in got])
        got = tuple(int(np.asarray(v).item()) for v in philox_np(*counter, *key))
        assert got == want, (counter, key, [hex(v) for v in got])
    checks = dict(philox_known_answers=len(PHILOX_KAT))
    for m in MASKS:
        d32 = float(np.float32(m["delta"]))
        mask = drop_mask(m["seed"], m["request_id"], m["t"], m["t"], hidden, d32)
        scalar = np.array([[drop_scalar(m["seed"], m["request_id"], m["t"], p, h, d32)
                            for h in range(hidden)] for p in range(m["t"])])
        assert np.array_equal(mask, scalar), m
    checks["scalar_equals_vectorised_elements"] = sum(m["t"] * hidden for m in MASKS)
    rates = {}
    for delta in (0.1, 0.2, 0.5):
        d32 = float(np.float32(delta))
        rate = float(drop_mask(7, 0, DROP_RATE_ROWS, DROP_RATE_ROWS, hidden, d32).mean())
        assert abs(rate - d32) <= DROP_RATE_TOL, (delta, rate)
        rates[str(delta)] = rate
    assert not drop_mask(7, 0, DROP_RATE_ROWS, DROP_RATE_ROWS, hidden, 0.0).any()
    checks["drop_rate"] = dict(elements=DROP_RATE_ROWS * hidden, rates=rates,
                               delta0_drops=0)
    return checks


# ---------------------------------------------------------------------------------------------
# Decoding

def entropy_bits(logits):
    z = logits.astype(np.float64)
    p = np.exp(z - z.max())
    p /= p.sum()
    return float(-np.sum(p * np.log2(p + ENTROPY_EPS)))






class Passes:
    """The vanilla and reframed last-position logits of a sequence (memoized: a sequence, and a
    sequence with its mask, always give the same logits)."""

    def __init__(self, model):
        self.model = model
        self.hidden = model.config.hidden_size
        self.vanilla_memo = {}
        self.reframed_memo = {}

    @torch.no_grad()
    def vanilla(self, seq):
        key = tuple(seq)
        if key not in self.vanilla_memo:
            out = self.model(torch.tensor([seq]), use_cache=False)
            self.vanilla_memo[key] = out.logits[0, -1].float().numpy().copy()
        return self.vanilla_memo[key]

    @torch.no_grad()
    def embeds(self, seq, drop=None):
        e = self.model.get_input_embeddings()(torch.tensor([seq])).float()
        if drop is not None:
            e = torch.where(torch.from_numpy(drop)[None], torch.zeros((), dtype=e.dtype), e)
        return self.model(inputs_embeds=e, use_cache=False).logits[0, -1].float().numpy().copy()

    def reframed(self, seq, seed, request_id, delta32):
        key = (tuple(seq), seed, request_id, delta32)
        if key not in self.reframed_memo:
            t = len(seq)
            drop = drop_mask(seed, request_id, t, t, self.hidden, delta32)
            self.reframed_memo[key] = self.embeds(seq, drop)
        return self.reframed_memo[key]


def decode(passes, prompt, request_id, setting, stats):
    """One run of the reference semantics; returns the run's record, the logits that picked
    each token and the reframed logits (zeros on steps that do not hesitate)."""
    theta32 = float(np.float32(setting["theta_bits"]))
    delta32 = float(np.float32(setting["delta"]))
    beta32 = np.float32(setting["beta_vanilla"])
    w = np.float32(1.0) - beta32
    seq = list(prompt)
    run = dict(setting=setting["name"], prompt=request_id, request_id=request_id, tokens=[],
               entropy_bits=[], hesitated=[], vanilla_argmax=[])
    finals, reframes, gaps, margins = [], [], [], []
    for _ in range(NEW_TOKENS):
        l = passes.vanilla(seq)
        hb = entropy_bits(l)
        hesitated = hb > theta32
        if math.isfinite(theta32):
            margins.append(abs(hb - theta32))
        if hesitated:
            lr = passes.reframed(seq, setting["seed"], request_id, delta32)
            final = (l + w * (lr - l)).astype(np.float32)
            # the reference's form, in float64 from the float32 operands
            ref = float(beta32) * l.astype(np.float64) + float(w) * lr.astype(np.float64)
            diff = np.abs(final.astype(np.float64) - ref)
            stats["mix_max_abs"] = max(stats["mix_max_abs"], float(diff.max()))
            scale = np.spacing(np.maximum(np.abs(l), np.abs(lr)))  # ulp of the operands
            stats["mix_max_ulps"] = max(stats["mix_max_ulps"], float((diff / scale).max()))
            reframes.append(lr)
        else:
            final = l
            reframes.append(np.zeros_like(l))
        token = argmax(final)
        gaps.append(logit_gap(final))
        finals.append(final)
        for field, value in (("tokens", token), ("entropy_bits", hb), ("hesitated", hesitated),
                             ("vanilla_argmax", argmax(l))):
            run[field].append(value)
        seq.append(token)
    run["n_hesitated"] = sum(run["hesitated"])
    run["min_entropy_margin"] = min(margins) if margins else None
    run["min_logit_gap"] = min(gaps)
    return run, np.stack(finals), np.stack(reframes)


@torch.no_grad()
def generate_greedy(model, prompt):
    config = GenerationConfig(do_sample=False, max_new_tokens=NEW_TOKENS,
                              min_new_tokens=0, eos_token_id=None, pad_token_id=0)
    out = model.generate(torch.tensor([prompt]), generation_config=config)
    return out[0, len(prompt):].tolist()




def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default=MODEL_DIR)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()

    model = load_model(args.model)
    cfg = model.config
    hidden = cfg.hidden_size
    checks = check_generator(hidden)

    sp = spm.SentencePieceProcessor(model_file=os.path.join(args.model, "tokenizer.model"))
    prompts = [[cfg.bos_token_id] + sp.encode(text) for text in PROMPTS]
    passes = Passes(model)

    # the unmasked inputs_embeds pass against the ids' pass (delta = 0 leaves the logits as is)
    worst = 0.0
    for prompt in prompts:
        worst = max(worst, float(np.abs(passes.embeds(prompt) - passes.vanilla(prompt)).max()))
    assert worst <= EMBEDS_TOL, worst
    checks["unmasked_embeds_max_abs"] = worst

    stats = dict(mix_max_abs=0.0, mix_max_ulps=0.0)
    greedy_setting = dict(name="greedy", theta_bits=math.inf, delta=0.0, beta_vanilla=1.0, seed=0)
    greedy, greedy_gaps = [], []
    for i, prompt in enumerate(prompts):
        run, _, _ = decode(passes, prompt, i, greedy_setting, stats)
        assert run["n_hesitated"] == 0 and run["tokens"] == run["vanilla_argmax"]
        greedy.append(run["tokens"])
        greedy_gaps.append(run["min_logit_gap"])
    checks["generate_equal"] = [generate_greedy(model, p) == g for p, g in zip(prompts, greedy)]
    assert all(checks["generate_equal"]), checks["generate_equal"]

    runs, tensors, summary = [], {}, {}
    for s in SETTINGS:
        mine = []
        for i, prompt in enumerate(prompts):
            run, finals, reframes = decode(passes, prompt, i, s, stats)
            assert run["min_entropy_margin"] >= MIN_MARGIN and \
                run["min_logit_gap"] >= MIN_LOGIT_GAP, \
                (s["name"], i, run["min_entropy_margin"], run["min_logit_gap"])
            mine.append(run)
            if s["name"] == LOGITS_SETTING and i in LOGITS_PROMPTS:
                tensors[f"{s['name']}.p{i}.mixed"] = torch.from_numpy(finals)
                tensors[f"{s['name']}.p{i}.reframed"] = torch.from_numpy(reframes)
        steps = NEW_TOKENS * len(mine)
        hes = sum(r["n_hesitated"] for r in mine)
        assert 0 < hes < steps, (s["name"], hes)
        summary[s["name"]] = dict(
            hesitated=hes, steps=steps,
            hesitated_per_prompt=[r["n_hesitated"] for r in mine],
            greedy_equal_prompts=sum(r["tokens"] == greedy[r["prompt"]] for r in mine),
            min_entropy_margin=min(r["min_entropy_margin"] for r in mine),
            min_logit_gap=min(r["min_logit_gap"] for r in mine))
        runs += mine
    # C has beta = 0: its hesitating steps take the reframed logits alone (up to the rounding of
    # l + (lr - l)); the mixed form is exactly l when lr == l.
    assert stats["mix_max_abs"] <= MIX_TOL and stats["mix_max_ulps"] <= 1.0, stats
    checks["mixed_vs_beta_form"] = dict(max_abs=stats["mix_max_abs"],
                                        max_ulps=stats["mix_max_ulps"])
    for m in MASKS:
        d32 = float(np.float32(m["delta"]))
        drop = drop_mask(m["seed"], m["request_id"], m["t"], m["t"], hidden, d32)
        name = f"mask.seed{m['seed']}.req{m['request_id']}.t{m['t']}.delta{m['delta']}"
        tensors[name] = torch.from_numpy(drop.astype(np.uint8))
        m["dropped"] = int(drop.sum())
    margins = dict(
        min_entropy_margin=min(v["min_entropy_margin"] for v in summary.values()),
        min_logit_gap=min(min(v["min_logit_gap"] for v in summary.values()), min(greedy_gaps)),
        greedy_min_logit_gap=min(greedy_gaps),
        per_setting={k: dict(min_entropy_margin=v["min_entropy_margin"],
                             min_logit_gap=v["min_logit_gap"]) for k, v in summary.items()},
        required=dict(entropy=MIN_MARGIN, logit_gap=MIN_LOGIT_GAP))

    doc = dict(
        tool=TOOL,
        model=MODEL_DIR,
        vocab_size=cfg.vocab_size,
        hidden_size=hidden,
        bos_token_id=cfg.bos_token_id,
        eos_token_id=cfg.eos_token_id,
        new_tokens=NEW_TOKENS,
        compute="float32 on the bf16 weights, eager attention, a full forward per step",
        entropy="bits, float64 from the float32 vanilla logits, -sum p log2(p + 1e-15); "
                "hesitate iff Hb > float32(theta_bits)",
        mix="l + (1 - beta_vanilla) * (lr - l), float32",
        mask="drop (p, h) iff ((philox4x32_10((h // 4, p, t, 0x4852), key)[h % 4] >> 8) * "
             "2^-24) < float32(delta), t = sequence length; key64 = "
             "splitmix64(splitmix64(seed) ^ request_id), key = (key64 & 0xffffffff, key64 >> 32)",
        settings=SETTINGS,
        prompts=[dict(text=t, ids=p) for t, p in zip(PROMPTS, prompts)],
        greedy=greedy,
        summary=summary,
        runs=runs,
        margins=margins,
    )
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, OUTPUTS[0]), "w", encoding="utf-8") as f:
        f.write(dumps(doc) + "\n")
    # a single metadata key: more than one is serialised in hash order (non-reproducible bytes)
    save_file({k: v.contiguous() for k, v in tensors.items()},
              os.path.join(args.out, OUTPUTS[1]), metadata={"format": "pt"})

    files = {}
    for name in OUTPUTS:
        path = os.path.join(args.out, name)
        files[name] = dict(bytes=os.path.getsize(path), sha256=sha256_file(path))
    manifest = dict(
        tool=TOOL,
        versions=dict(python=platform.python_version(), torch=torch.__version__,
                      transformers=transformers.__version__, safetensors=safetensors.__version__,
                      sentencepiece=spm.__version__, numpy=np.__version__),
        model=MODEL_DIR,
        model_sha256=sha256_file(os.path.join(args.model, "model.safetensors")),
        settings=dict(new_tokens=NEW_TOKENS, settings=SETTINGS, stream_harp=STREAM_HARP,
                      entropy_eps=ENTROPY_EPS, attn_implementation="eager", dtype="float32",
                      logits_setting=LOGITS_SETTING, logits_prompts=LOGITS_PROMPTS,
                      masks=MASKS),
        checks=checks,
        hesitation={k: dict(hesitated=v["hesitated"], steps=v["steps"],
                            per_prompt=v["hesitated_per_prompt"]) for k, v in summary.items()},
        margins=margins,
        files=files,
    )
    with open(os.path.join(args.out, "MANIFEST.json"), "w", encoding="utf-8") as f:
        f.write(dumps(manifest) + "\n")
    for k, v in summary.items():
        print(f"{k}: hesitated {v['hesitated']}/{v['steps']} {v['hesitated_per_prompt']}, "
              f"greedy-equal prompts {v['greedy_equal_prompts']}/{len(prompts)}, min entropy "
              f"margin {v['min_entropy_margin']:.2e}, min logit gap {v['min_logit_gap']:.2e}")
    print(json.dumps(checks, indent=1))
    print(json.dumps(files, indent=1))


if __name__ == "__main__":
    main()
