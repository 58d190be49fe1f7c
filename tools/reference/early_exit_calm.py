"""Records CALM early-exit decoding on transformers, on the embedded model
models/tessera-code-tiny, with the fork's vocabulary-reduced and JSD-contrastive confidences,
greedy, batch 1, for the runtime's CALM tests (shared/specs/early_exit.md §0, §2, §3.1-3.3, §6.6).

Semantics, per prompt (the six prompts of free_reference.json) and setting (threshold tau,
vocabulary reduction), with checks after c blocks for c in check_layers = the model's
tessera_exit_layers (2, 4, 6 of 8):
- The prompt runs at full depth, writing every layer's K/V; the first new token is the argmax of
  the final logits at the last prompt position. It is never checked.
- Each later step feeds the last emitted token at position t through the blocks one by one; block
  l attends to layer l's cached K/V of every earlier position and its own. At each check, in order,
  the exit head is z = lm_head(norm(h)), h the residual stream after c blocks; its confidence is
  c = p(1) - p(2) of softmax(z), in float64 from the float32 logits. The token exits iff
  c > tau, strictly, with tau rounded to float32 as the runtime's `threshold` is, and is then the
  argmax of the check's logits (ties: the smaller id).
- State propagation after an exit at c blocks: every block l >= c writes only its K and V at t,
  k = rope(W_k input_layernorm_l(h)), v = W_v input_layernorm_l(h), from the frozen h; no
  attention output, no MLP, the residual stays h. A token that no check lets out runs every block
  and is the argmax of the final logits.
- Vocabulary reduction (VOCAB_FIXED, VOCAB_DECAYING, VOCAB_ADAPTIVE): a step's first check uses
  the full vocabulary and keeps its global top K0 ids, by logit descending (ties: smaller id
  first); K0 = vocab_k when given, else the fork's schedule
  k(i) = max(250, floor(35000 / (1 + (35000 - 250) / 250 * i / L))) at the first check, at most
  the vocabulary size V. A later check after i blocks keeps the first k ids of that list: K0
  (FIXED), min(K0, k(i)) (DECAYING), or min(K0, max(1, floor(V (1 - 0.9 c_prev)))) with c_prev
  the previous check's confidence rounded to float32 (ADAPTIVE). Its logits are z on the kept
  rows and -inf elsewhere, so the confidence renormalises over the kept rows and an exit emits
  their argmax (a vocabulary id). VOCAB_FULL checks the whole vocabulary everywhere.
- Confidence TOP2_GAP is the c above. JSD_CONTRASTIVE (full vocabulary only, as the runtime's
  research mode): at the check after l blocks, p_l = softmax(z_l) in float64 from the float32
  logits. The amateurs are the step's earlier checks of at least 2 blocks; a check with none
  (here the one after 2 blocks) does not exit, only keeps p_l, and records confidence 0.0. Over
  the plausibility head V_head = {x : p_l(x) >= 0.1 max p_l}, each amateur j scores
  JSD_j / (l - j), JSD_j = 0.5 sum_head p_l log(p_l / M) + 0.5 sum_head p_j log(p_j / M),
  M = (p_l + p_j) / 2, on the unnormalised head entries (a term with p = 0 adds nothing); the
  amateur m is the first of the largest score. s = softmax over the head of log p_l - log p_m
  (times sum_V p_l = 1) on the head and s = p_l off it, and c = s(1) - s(2) over the whole
  vocabulary. The exit rule is the same (c > tau_f32); an exit still emits the argmax of z_l, not
  of s, and propagates the state as above.

Settings: VOCAB_FULL at tau 1.0, 0.9, 0.6, 0.3; at tau 0.6, VOCAB_FIXED with vocab_k 256 and
4096 (the latter equals VOCAB_FULL), VOCAB_DECAYING and VOCAB_ADAPTIVE without vocab_k; and
VOCAB_ADAPTIVE at tau 0.9, where its row count falls below K0 (below tau 0.8455 it never does);
all with TOP2_GAP. Then JSD_CONTRASTIVE with VOCAB_FULL at tau 0.9 and 0.6.
A setting whose decisions or emitted argmaxes come too close to a tie moves to the first clearing
threshold of its TAU_CANDIDATES (recorded as tau, the asked one as tau_requested); 24 new tokens
per prompt, EOS an ordinary token.

Writes under --out:
- calm_reference.json: the prompts, plain greedy continuations, a summary per setting and one run
  per (setting, prompt): its settings, emitted ids and, per new token, the checks made
  ({blocks, confidence, exited, kept_rows}), exit_blocks (null: every block ran) and the logit gap
  of the head that emitted it; the run's smallest |c - tau_f32| over the checks that may exit and
  smallest logit gap, and for ADAPTIVE how close V (1 - 0.9 c_prev) came to changing a check's
  kept rows (a runtime whose c_prev differs by d may keep one row more or fewer where this is
  below about 3700 d). JSD_CONTRASTIVE checks also record amateur (the blocks of m, null where
  there is none), and its runs amateur_margin, the smallest relative gap (best - runner-up) / best
  between the two largest amateur scores (null with one candidate), and head_margin, the smallest
  |z_l(x) - max z_l - ln 0.1| over every contrasted check and id: how far, in logits, an id is from
  moving across the head's edge. Both are diagnostics for a runtime whose logits differ slightly;
  they do not move tau.
- MANIFEST.json: this tool's settings, checks, and the size and sha256 of calm_reference.json,
  merged into the manifest that early_exit.py writes (its entries are kept as they are; that
  tool rewrites the manifest whole, so after it runs, run this one again).

Checks before anything is written: every decision is at least 1e-3 from its threshold and every
emitted argmax leads the runner-up logit by at least 1e-3 (tau >= 1 cannot exit, c <= 1, and is
exempt from the first; a JSD check with no amateur makes no decision); tau = 1.0 reproduces
transformers' generate (greedy, KV cache) and the greedy ids of free_reference.json, and leaves
every layer's KV cache equal to a full-depth prefill of the same tokens; VOCAB_FIXED with
vocab_k = V reproduces VOCAB_FULL exactly; tau = -1 emits the 2-block head's argmax at every step,
i.e. transformers' model truncated to 2 blocks; a reduced check whose full top-2 ids are kept has
a confidence no lower than the full one.

    python3 tools/reference/early_exit_calm.py --out tests/fixtures/early_exit
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

from early_exit import (MIN_LOGIT_GAP, MIN_MARGIN, NEW_TOKENS, argmax, dumps, generate_greedy,
                        layer_kv, load_model, logit_gap, run_cached, top2_gap, truncated_model)
from llama_layers import head

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from make_fixtures import sha256_file  # noqa: E402

TOOL = "tools/reference/early_exit_calm.py"
OUTPUT = "calm_reference.json"
FREE_FIXTURE = "free_reference.json"  # the prompts and greedy ids (tools/reference/early_exit.py)
MODEL_DIR = "models/tessera-code-tiny"
POLICY = "CALM"
TOP2, JSD = "TOP2_GAP", "JSD_CONTRASTIVE"
# (confidence, vocab_reduction, vocab_k, tau asked for); the runs are recorded in this order.
# At tau 0.6 a check that goes on has c_prev <= 0.6, so ADAPTIVE's floor(V (1 - 0.9 c_prev)) >= 1884
# never binds below K0 = 979: the setting at tau 0.9 is the one where it does.
SETTINGS = ([(TOP2, "VOCAB_FULL", None, tau) for tau in (1.0, 0.9, 0.6, 0.3)] +
            [(TOP2, "VOCAB_FIXED", 256, 0.6), (TOP2, "VOCAB_DECAYING", None, 0.6),
             (TOP2, "VOCAB_ADAPTIVE", None, 0.6), (TOP2, "VOCAB_FIXED", 4096, 0.6),
             (TOP2, "VOCAB_ADAPTIVE", None, 0.9)] +
            [(JSD, "VOCAB_FULL", None, tau) for tau in (0.9, 0.6)])
# Thresholds tried in order when one is too close to a decision or moves an argmax near a tie.
TAU_CANDIDATES = {1.0: [1.0], 0.9: [0.9, 0.88, 0.92, 0.87, 0.93],
                  0.6: [0.6, 0.58, 0.62, 0.57, 0.63], 0.3: [0.3, 0.28, 0.32, 0.27, 0.33]}
# The fork's vocabulary schedule k(i) = max(K_MIN, floor(K1 / (1 + (K1 - K_MIN) / K_MIN * i / L))).
K1, K_MIN = 35000.0, 250.0
ADAPTIVE_SLOPE = 0.9    # adaptive rows: floor(V * (1 - 0.9 * c_prev))
KV_TOL = 1e-4           # per-layer caches against a full-depth prefill (float32)
TRUNCATED_EXIT = 2      # tau = -1 check: the first check's blocks
PLAUSIBILITY = 0.1      # alpha of JSD_CONTRASTIVE's head, hard-coded as in Li et al.
MIN_AMATEUR_BLOCKS = 2  # JSD_CONTRASTIVE: an earlier check of fewer blocks is no amateur


def fork_schedule(blocks, layers, vocab):
    """Rows the fork keeps at the check after `blocks` of `layers` blocks, at most `vocab`."""
    k = math.floor(K1 / (1.0 + (K1 - K_MIN) / K_MIN * blocks / layers))
    return min(vocab, int(max(K_MIN, k)))


def first_k0(reduction, vocab_k, check_layers, layers, vocab):
    """Ids a reduced vocabulary keeps at a step's first check (None for VOCAB_FULL)."""
    if reduction == "VOCAB_FULL":
        return None
    k = vocab_k if vocab_k is not None else fork_schedule(check_layers[0], layers, vocab)
    return min(k, vocab)


def top_ids(z, k):
    """The k largest logits' ids, by logit descending, ties by the smaller id first."""
    order = np.lexsort((np.arange(z.shape[0]), -z))
    return order[:k]


def rows_at_check(reduction, k0, blocks, layers, vocab, c_prev):
    """Kept rows at a later check after `blocks` blocks (c_prev: the previous check's
    confidence, already rounded to float32), and for ADAPTIVE how far the unfloored row count
    is from a value that would change them (None where none can)."""
    if reduction == "VOCAB_FIXED":
        return k0, None
    if reduction == "VOCAB_DECAYING":
        return min(k0, fork_schedule(blocks, layers, vocab)), None
    assert reduction == "VOCAB_ADAPTIVE", reduction
    x = vocab * (1.0 - ADAPTIVE_SLOPE * c_prev)
    rows = min(k0, max(1, math.floor(x)))
    if x >= k0 + 1 or x < 1:
        return rows, None
    below = x - math.floor(x)
    above = math.floor(x) + 1 - x if math.floor(x) + 1 <= k0 else math.inf
    return rows, min(below, above)


def softmax64(z):
    """softmax(z) in float64 from the float32 logits."""
    p = np.exp(z.astype(np.float64) - float(z.max()))
    return p / p.sum()


def head_jsd(p, q):
    """0.5 KL(p || M) + 0.5 KL(q || M), M = (p + q) / 2, over unnormalised vectors (the head's
    entries); a term whose p (or q) is 0 adds nothing."""
    m = 0.5 * (p + q)
    jsd = 0.0
    for a in (p, q):
        nz = a > 0
        jsd += 0.5 * float(np.sum(a[nz] * np.log(a[nz] / m[nz])))
    return jsd


def jsd_contrastive(z, blocks, amateurs):
    """JSD_CONTRASTIVE confidence of the check after `blocks` blocks with logits z against the
    step's earlier checks `amateurs` [(blocks, p)], not empty. Returns (c, the amateur's blocks,
    the relative gap between the two largest scores or None with one candidate, the smallest
    distance in logits of any id to the head's edge)."""
    p = softmax64(z)
    head = np.flatnonzero(p >= PLAUSIBILITY * p.max())
    scores = [head_jsd(p[head], q[head]) / (blocks - j) for j, q in amateurs]
    best = int(np.argmax(scores))  # the first of the largest
    ranked = sorted(scores, reverse=True)
    score_margin = (ranked[0] - ranked[1]) / ranked[0] if len(ranked) > 1 else None
    contrast = np.log(p[head]) - np.log(amateurs[best][1][head])
    assert np.isfinite(contrast).all(), "an amateur has probability 0 on the head"
    e = np.exp(contrast - contrast.max())
    s = p.copy()  # off the head: p_l
    s[head] = e / e.sum()  # times sum_V p_l = 1
    second, first = np.partition(s, -2)[-2:]
    edge = float(np.min(np.abs(z.astype(np.float64) - float(z.max()) - math.log(PLAUSIBILITY))))
    return float(first - second), amateurs[best][0], score_margin, edge


@torch.no_grad()
def calm_decode(model, prompt, check_layers, reduction, vocab_k, tau, stats=None,
                confidence=TOP2):
    """One run of the reference semantics. Returns the run's record (without its prompt fields)
    and the per-layer KV cache it leaves. `stats`, if given, collects the reduced checks' full
    confidences for the pruning invariant."""
    cfg = model.config
    layers, vocab = cfg.num_hidden_layers, cfg.vocab_size
    assert confidence == TOP2 or reduction == "VOCAB_FULL", (confidence, reduction)
    tau32 = float(np.float32(tau))
    k0 = first_k0(reduction, vocab_k, check_layers, layers, vocab)
    cache = [None] * layers
    x = model.model.embed_tokens(torch.tensor([prompt]))
    h = run_cached(model, x, list(range(len(prompt))), range(layers), cache)
    final = head(model, h[:, -1:])[0].numpy()
    generated = [argmax(final)]
    tokens = [dict(checks=[], exit_blocks=None, logit_gap=logit_gap(final))]
    rows_margins, decisions, amateur_margins, head_margins = [], [], [], []
    for step in range(1, NEW_TOKENS):
        t = len(prompt) + step - 1
        h = model.model.embed_tokens(torch.tensor([[generated[-1]]]))
        done, kept, c_prev, checks, token = 0, None, None, [], None
        amateurs = []  # JSD_CONTRASTIVE: the step's earlier checks (blocks, p)
        for n, blocks in enumerate(check_layers):
            h = run_cached(model, h, [t], range(done, blocks), cache)
            done = blocks
            z = head(model, h)[0].numpy()
            if reduction == "VOCAB_FULL" or n == 0:
                rows, zr = vocab, z
                if reduction != "VOCAB_FULL":
                    kept = top_ids(z, k0)
            else:
                rows, rows_margin = rows_at_check(reduction, k0, blocks, layers, vocab, c_prev)
                if rows_margin is not None:
                    rows_margins.append(rows_margin)
                assert rows >= 2, rows
                zr = np.full_like(z, -np.inf)
                zr[kept[:rows]] = z[kept[:rows]]
            if confidence == TOP2:
                c = top2_gap(zr)
                exited = c > tau32
                check = dict(blocks=blocks, confidence=c, exited=exited, kept_rows=rows)
                decisions.append(c)
            elif not amateurs:  # nothing to contrast with yet: the check only keeps p_l
                c, exited = 0.0, False
                check = dict(blocks=blocks, confidence=c, exited=exited, kept_rows=rows,
                             amateur=None)
            else:
                c, amateur, score_margin, edge = jsd_contrastive(z, blocks, amateurs)
                exited = c > tau32
                check = dict(blocks=blocks, confidence=c, exited=exited, kept_rows=rows,
                             amateur=amateur)
                decisions.append(c)
                head_margins.append(edge)
                if score_margin is not None:
                    amateur_margins.append(score_margin)
            if confidence == JSD and blocks >= MIN_AMATEUR_BLOCKS:
                amateurs.append((blocks, softmax64(z)))
            if stats is not None and rows < vocab:
                full_top2 = np.argsort(-z, kind="stable")[:2]
                if np.isin(full_top2, kept[:rows]).all():
                    stats.append(c - top2_gap(z))
            checks.append(check)
            if exited:
                token = dict(id=argmax(zr), gap=logit_gap(zr), exit_blocks=blocks)
                for l in range(blocks, layers):  # state propagation: K/V only, from frozen h
                    k, v = layer_kv(model, l, h, [t])
                    cache[l] = (torch.cat([cache[l][0], k], dim=2),
                                torch.cat([cache[l][1], v], dim=2))
                break
            c_prev = float(np.float32(c))  # as the runtime sends it between stages
        if token is None:
            h = run_cached(model, h, [t], range(done, layers), cache)
            final = head(model, h)[0].numpy()
            token = dict(id=argmax(final), gap=logit_gap(final), exit_blocks=None)
        generated.append(token["id"])
        tokens.append(dict(checks=checks, exit_blocks=token["exit_blocks"],
                           logit_gap=token["gap"]))
    run = dict(
        settings=dict(policy=POLICY, check_layers=list(check_layers), tau=tau, tau_f32=tau32,
                      confidence=confidence, vocab_reduction=reduction, vocab_k=vocab_k, k0=k0),
        generated_ids=generated,
        tokens=tokens,
        n_checks=sum(len(tok["checks"]) for tok in tokens),
        n_exits=sum(tok["exit_blocks"] is not None for tok in tokens),
        margin=min(abs(c - tau32) for c in decisions),
        min_logit_gap=min(tok["logit_gap"] for tok in tokens),
        kept_rows_margin=min(rows_margins) if rows_margins else None,
    )
    if confidence == JSD:
        run.update(amateur_margin=min(amateur_margins) if amateur_margins else None,
                   head_margin=min(head_margins))
    return run, cache


def clears(run):
    """Whether no decision or emitted argmax of the run is near a tie (tau >= 1 never exits)."""
    near_tau = run["settings"]["tau_f32"] < 1.0 and run["margin"] < MIN_MARGIN
    return not near_tau and run["min_logit_gap"] >= MIN_LOGIT_GAP


def agreement(run, greedy):
    """Longest common prefix with greedy decoding, and the number of equal positions."""
    prefix = 0
    while prefix < len(greedy) and run["generated_ids"][prefix] == greedy[prefix]:
        prefix += 1
    return prefix, sum(a == b for a, b in zip(run["generated_ids"], greedy))


def merge_manifest(path, entry, file_entry):
    """Adds this tool to the directory's manifest, keeping every other entry as it is."""
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    tools = manifest["tool"] if isinstance(manifest["tool"], list) else [manifest["tool"]]
    if TOOL not in tools:
        tools.append(TOOL)
    manifest["tool"] = tools
    manifest["calm"] = entry
    manifest["files"][OUTPUT] = file_entry
    with open(path, "w", encoding="utf-8") as f:
        f.write(dumps(manifest) + "\n")


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
    layers, vocab = cfg.num_hidden_layers, cfg.vocab_size
    check_layers = list(cfg.tessera_exit_layers)
    assert check_layers == sorted(set(check_layers)) and 0 < check_layers[0]
    assert check_layers[-1] < layers and check_layers[0] == TRUNCATED_EXIT

    manifest_path = os.path.join(args.out, "MANIFEST.json")
    with open(manifest_path, encoding="utf-8") as f:
        free_files = json.load(f)["files"]
    free_path = os.path.join(args.out, FREE_FIXTURE)
    assert sha256_file(free_path) == free_files[FREE_FIXTURE]["sha256"], \
        f"{free_path} does not match its manifest entry"
    with open(free_path, encoding="utf-8") as f:
        free = json.load(f)
    assert free["new_tokens"] == NEW_TOKENS
    prompts = [p["ids"] for p in free["prompts"]]

    runs, summary, stats = [], [], []
    for confidence, reduction, vocab_k, asked in SETTINGS:
        for tau in TAU_CANDIDATES[asked]:
            mine = [calm_decode(model, p, check_layers, reduction, vocab_k, tau, stats,
                                confidence)[0] for p in prompts]
            if all(clears(r) for r in mine):
                break
            print(f"{confidence} {reduction} vocab_k={vocab_k} tau={tau}: a decision or argmax "
                  f"is near a tie")
        else:
            raise SystemExit(f"{confidence} {reduction} vocab_k={vocab_k}: no threshold of "
                             f"{TAU_CANDIDATES[asked]} clears the margins")
        for i, (prompt, run) in enumerate(zip(prompts, mine)):
            runs.append(dict(prompt=i, prompt_ids=prompt, **run))
        summary.append(dict(confidence=confidence, vocab_reduction=reduction, vocab_k=vocab_k,
                            tau_requested=asked, tau=tau, tau_f32=float(np.float32(tau))))

    def runs_of(reduction, vocab_k, tau, confidence=TOP2):
        return [r for r in runs if (r["settings"]["confidence"], r["settings"]["vocab_reduction"],
                                    r["settings"]["vocab_k"], r["settings"]["tau"]) ==
                (confidence, reduction, vocab_k, tau)]

    checks = {}
    # Plain greedy decoding is the tau = 1 run: no check exits, it equals generate's and the
    # greedy ids of free_reference.json, and its caches equal a full-depth prefill.
    never = runs_of("VOCAB_FULL", None, 1.0)
    greedy = [r["generated_ids"] for r in never]
    assert all(r["n_exits"] == 0 for r in never)
    checks["generate_equal"] = [generate_greedy(model, p) == g for p, g in zip(prompts, greedy)]
    checks["free_greedy_equal"] = [g == f for g, f in zip(greedy, free["greedy"])]
    assert all(checks["generate_equal"]) and all(checks["free_greedy_equal"]), checks
    kv = 0.0
    for prompt, g in zip(prompts, greedy):
        _, cache = calm_decode(model, prompt, check_layers, "VOCAB_FULL", None, 1.0)
        with torch.no_grad():
            ref = model(torch.tensor([prompt + g[:-1]]), use_cache=True).past_key_values
        kv = max(kv, max(float(max((cache[l][0] - ref.layers[l].keys).abs().max(),
                                   (cache[l][1] - ref.layers[l].values).abs().max()))
                         for l in range(layers)))
    assert kv < KV_TOL, kv
    checks["greedy_kv_max_abs"] = kv
    # vocab_k = V keeps every row: the same run as VOCAB_FULL, bit for bit.
    full_tau = next(s["tau"] for s in summary
                    if (s["confidence"], s["vocab_reduction"], s["tau_requested"]) ==
                    (TOP2, "VOCAB_FULL", 0.6))
    same = [s for s in summary if (s["confidence"], s["vocab_reduction"], s["vocab_k"]) ==
            (TOP2, "VOCAB_FIXED", vocab)]
    assert same and same[0]["tau"] == full_tau, (same, full_tau)
    for a, b in zip(runs_of("VOCAB_FIXED", vocab, full_tau), runs_of("VOCAB_FULL", None, full_tau)):
        assert a["generated_ids"] == b["generated_ids"] and a["tokens"] == b["tokens"]
    checks["fixed_full_vocab_equals_full"] = True
    # tau = -1: every step exits at the first check, i.e. the model truncated to its blocks.
    small = truncated_model(model, TRUNCATED_EXIT)
    checks["always_exit_equals_truncated"] = []
    for prompt, g in zip(prompts, greedy):
        run, _ = calm_decode(model, prompt, check_layers, "VOCAB_FULL", None, -1.0)
        assert all(t["exit_blocks"] == TRUNCATED_EXIT for t in run["tokens"][1:])
        shallow = generate_greedy(small, prompt + g[:1])
        checks["always_exit_equals_truncated"].append(run["generated_ids"][1:] == shallow[:-1])
    assert all(checks["always_exit_equals_truncated"]), checks
    # Pruned confidence >= full confidence whenever the full top-2 are kept (spec §8.9).
    assert stats and min(stats) >= -1e-12, min(stats)
    checks["pruned_gap_ge_full"] = dict(checks=len(stats), min_difference=min(stats))

    for s in summary:
        mine = runs_of(s["vocab_reduction"], s["vocab_k"], s["tau"], s["confidence"])
        for run in mine:
            run["greedy_prefix"], run["greedy_same"] = agreement(run, greedy[run["prompt"]])
        checked = sum(r["n_checks"] for r in mine)
        exits = sum(r["n_exits"] for r in mine)
        exit_blocks = {str(c): sum(t["exit_blocks"] == c for r in mine for t in r["tokens"])
                       for c in check_layers}
        s.update(
            exits=exits, checks=checked, exits_at=exit_blocks,
            decode_tokens=(NEW_TOKENS - 1) * len(mine),
            exit_rate=exits / ((NEW_TOKENS - 1) * len(mine)),
            greedy_equal_prompts=sum(r["generated_ids"] == greedy[r["prompt"]] for r in mine),
            greedy_token_agreement=sum(r["greedy_same"] for r in mine) / (NEW_TOKENS * len(mine)),
            mean_greedy_prefix=sum(r["greedy_prefix"] for r in mine) / len(mine),
            min_margin=min(r["margin"] for r in mine),
            min_logit_gap=min(r["min_logit_gap"] for r in mine),
            kept_rows_margin=min((r["kept_rows_margin"] for r in mine
                                  if r["kept_rows_margin"] is not None), default=None),
            adaptive_rows_below_k0=sum(c["kept_rows"] < r["settings"]["k0"] for r in mine
                                       for t in r["tokens"] for c in t["checks"][1:])
            if s["vocab_reduction"] == "VOCAB_ADAPTIVE" else None)
        if s["confidence"] == JSD:
            contrasted = [c for r in mine for t in r["tokens"] for c in t["checks"]
                          if c["amateur"] is not None]
            s.update(
                recording_checks=sum(c["amateur"] is None for r in mine for t in r["tokens"]
                                     for c in t["checks"]),
                amateurs={str(b): sum(c["amateur"] == b for c in contrasted)
                          for b in check_layers if any(c["amateur"] == b for c in contrasted)},
                amateur_margin=min((r["amateur_margin"] for r in mine
                                    if r["amateur_margin"] is not None), default=None),
                head_margin=min(r["head_margin"] for r in mine))

    doc = dict(
        tool=TOOL,
        model=MODEL_DIR,
        num_hidden_layers=layers,
        vocab_size=vocab,
        bos_token_id=cfg.bos_token_id,
        eos_token_id=cfg.eos_token_id,
        check_layers=check_layers,
        new_tokens=NEW_TOKENS,
        compute="float32 on the bf16 weights, eager attention, block by block with per-layer KV "
                "caches; after an exit the remaining blocks write K/V of the frozen state only",
        confidence="TOP2_GAP: p(1) - p(2) of the check's softmax (over the kept rows), float64; "
                   "exit iff c > tau_f32",
        jsd_contrastive="JSD_CONTRASTIVE (full vocabulary): amateur m = the first argmax over the "
                        "step's earlier checks j >= 2 blocks of JSD(p_l|head, p_j|head) / (l - j), "
                        "head = {x : p_l(x) >= 0.1 max p_l}; s = softmax_head(log p_l - log p_m) "
                        "on the head, p_l off it; c = s(1) - s(2), float64; a check without an "
                        "amateur records c = 0 and does not exit; an exit emits argmax z_l",
        vocab_schedule="k(i) = max(250, floor(35000 / (1 + (35000 - 250) / 250 * i / L))), at "
                       "most vocab_size; adaptive: min(k0, max(1, floor(V (1 - 0.9 c_prev))))",
        prompts=free["prompts"],
        greedy=greedy,
        summary=summary,
        runs=runs,
    )
    os.makedirs(args.out, exist_ok=True)
    out_path = os.path.join(args.out, OUTPUT)
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(dumps(doc) + "\n")
    entry = dict(
        tool=TOOL,
        versions=dict(python=platform.python_version(), torch=torch.__version__,
                      transformers=transformers.__version__, safetensors=safetensors.__version__,
                      sentencepiece=spm.__version__, numpy=np.__version__),
        model_sha256=sha256_file(os.path.join(args.model, "model.safetensors")),
        settings=dict(new_tokens=NEW_TOKENS, check_layers=check_layers,
                      runs=[{k: s[k] for k in ("confidence", "vocab_reduction", "vocab_k",
                                               "tau_requested", "tau")} for s in summary],
                      prompts_from=FREE_FIXTURE, attn_implementation="eager", dtype="float32"),
        checks=checks,
    )
    merge_manifest(manifest_path, entry,
                   dict(bytes=os.path.getsize(out_path), sha256=sha256_file(out_path)))
    for s in summary:
        k = "" if s["vocab_k"] is None else f" k={s['vocab_k']}"
        print(f"{s['confidence']:15s} {s['vocab_reduction']:14s}{k:7s} tau={s['tau']:4} (asked "
              f"{s['tau_requested']}): "
              f"exits {s['exits']}/{s['decode_tokens']} at {s['exits_at']}, checks {s['checks']}, "
              f"greedy-equal prompts {s['greedy_equal_prompts']}/{len(prompts)}, token agreement "
              f"{s['greedy_token_agreement']:.3f}, mean greedy prefix "
              f"{s['mean_greedy_prefix']:.1f}, min margin {s['min_margin']:.2e}, min logit gap "
              f"{s['min_logit_gap']:.2e}" +
              ("" if s["kept_rows_margin"] is None else
               f", adaptive rows below K0 {s['adaptive_rows_below_k0']}, kept-rows margin "
               f"{s['kept_rows_margin']:.2e}") +
              ("" if s["confidence"] != JSD else
               f", recording checks {s['recording_checks']}, amateurs {s['amateurs']}, amateur "
               f"margin {math.nan if s['amateur_margin'] is None else s['amateur_margin']:.2e}, "
               f"head margin {s['head_margin']:.2e}"))
    print(json.dumps(checks, indent=1))


if __name__ == "__main__":
    main()
