#!/usr/bin/env python3
"""Early-exit benchmark: FREE, CALM and the static baseline against the plain model.

Runs `tessera generate` on the embedded model (models/tessera-code-tiny, exits trained after
2, 4, 6 of its 8 blocks) over prompts cut from held-out code, and reports for each setting
the cost (exit rate, mean layers per token, decode tokens/s, speedup over the plain model) and
the quality (greedy agreement with the plain model, perplexity of the chosen tokens under the
plain model). methods/early_exit/README.md quotes the figures; plot_early_exit.py draws them.

Settings, each at --max-batch 1 and 8, 64 new tokens, greedy, --ignore-eos:
  * plain: no method;
  * FREE at exit_layer 2 and 4, threshold 1.0 (never exits: the cost of the check alone),
    0.95, 0.9, 0.8, 0.6, and adaptive (threshold 0.9 to start, adaptive_threshold=true);
  * STATIC at exit_layer 2 and 4 (every decode token leaves after exit_layer blocks);
  * CALM (checks after 2, 4 and 6 blocks, config.json's tessera_exit_layers; an exited token's
    remaining blocks only write K and V from its state) over the full vocabulary at threshold
    0.95, 0.9, 0.8, 0.6, and with the vocabulary-reduced confidence at 0.9 and 0.6: VOCAB_FIXED
    with vocab_k 256, VOCAB_DECAYING and VOCAB_ADAPTIVE with the default vocab_k (the fork's
    k(i) at the first check, 979 of 4096 rows after 2 of 8 blocks; with vocab_k 256 the decaying
    schedule, 496 and 332 after 4 and 6 blocks, would never cut below it: FIXED's rows).
--only picks a subset (families free, static, calm, or fnmatch patterns on the setting names);
the plain runs are made in every invocation, interleaved as below. --merge adds the settings to
the results already at --out (same prompts, model and new tokens, and the plain tokens must be
the stored ones, the reference of the stored rows): a setting of the same name is replaced, the
others and the stored plain row are kept, and each row names the invocation (`runs`) that
measured it, with its repeats and launcher hash.

Prompts. The model was trained on the CPython 3.11.7 standard library, minus the files whose
sha1(relative path) starts with "0" (tools/train/build_corpus.py; the lists are in
tools/train/corpus_manifest.json). The prompts come only from those 97 held-out files, read
from the stdlib directory the manifest names, after checking that the held-out bytes hash to
the manifest's SHA-256 (the very files that were held out). Files of generated tables
(encodings/) and files whose lines largely occur verbatim in the training split are skipped;
from each remaining file (evenly spaced over the sorted list) one window is cut: it starts at
the `def` / `class` line nearest the middle of the file and ends at a line end once it holds
--prompt-tokens tokens (BOS included; kept within 64-200). A window is used only if its text
is not a substring of any training file and at most 30 % of its lines (those of 20 characters
or more) occur verbatim in the training split. The prompts, with their file and line, are
written next to the results (<out>.prompts.jsonl).

Timing. The generator's timings run from the start of its Generate() call (model loading is
outside it): time_to_first_token_ms is when a sequence's prompt pass ended, total_ms when its
last token came. With --ignore-eos every sequence makes exactly --max-new-tokens tokens, so the
sequences admitted together (--max-batch of them) get their first token in the same step and
end in the same step: they form a wave, and the next wave's prompt pass starts after it. The
decode time of a call is the sum over its waves of (last total_ms - first time to first token):
the wall time of the decode steps, prefill excluded (every policy runs prompts at full depth,
so prefill is the same work everywhere). Decode tokens/s = (new tokens - 1 per sequence) /
decode time. At batch 1 this is the sum of per-sequence decode times; at batch 8 it is the wall
time of the batched steps, not a sum over sequences, which would count each step 8 times. The
speedup of a setting is the median, over --repeats adjacent (plain, method) pairs run in
alternating order, of plain decode time / method decode time; the tokens/s figures are medians
over the repeats. Timings share the machine with whatever else runs on it: read them as medians
of interleaved runs. Every run uses one private copy of the launcher, taken at the start (a
rebuild of build/ meanwhile does not mix builds), and one thread (--threads): a second thread
is within the noise for this model, and a single one is not held up at barriers while another
process occupies the other core.

Cost of the check, from the runners' counters: exit rate = exits / decode tokens (FREE checks
each decode token once, CALM up to once per check layer); checks per decode token; LM-head rows
per check = exit_check_rows / exit_checks (CALM; the vocabulary at a full check, fewer after a
reduced one's first check); check FLOPs per decode token = exit_check_flops / decode tokens
(2 x hidden x rows of each check; FREE reports it too); K/V-only layers per decode token
(CALM's state propagation, kv_filled_layers).

Quality, against the plain run at the same batch size:
  * prefix agreement: the fraction of new tokens before the first one that differs from the
    plain greedy output (1.0 when none does), averaged over prompts;
  * position-wise agreement: the fraction of positions whose token equals the plain token;
  * perplexity of the chosen new tokens under the plain model (prompt + new tokens scored by
    transformers' LlamaForCausalLM in float32 on the shipped weights; no Tessera command scores
    given token ids);
  * own-prefix agreement: the fraction of new tokens equal to the plain model's argmax given the
    same prefix (a per-decision error rate that does not compound after a divergence), and the
    same over exited tokens only.
The exit heads' calibration (top-2 gap after 2 and 4 blocks against "argmax = final argmax",
teacher-forced on the plain greedy outputs) is stored as well: the exit rate and the accuracy
of exited tokens each threshold would give.

Commands (from the repository root):
  python3 tools/bench/early_exit.py                  # full run, about 20-25 min on 2 cores
  python3 tools/bench/early_exit.py --quick --out /tmp/early_exit_quick.json   # smoke test
  python3 tools/bench/early_exit.py --only calm --merge --repeats 5  # CALM added, 6.5 min
  python3 tools/bench/plot_early_exit.py             # methods/early_exit/quality_vs_cost.png

Needs torch, transformers, sentencepiece, numpy (the perplexity and the prompt lengths).
"""
import argparse
import fnmatch
import hashlib
import json
import math
import os
import statistics
import subprocess
import shutil
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MANIFEST = os.path.join(REPO, "tools", "train", "corpus_manifest.json")
DEFAULT_BINARY = os.path.join(REPO, "build", "launcher", "tessera")
DEFAULT_MODEL = os.path.join(REPO, "models", "tessera-code-tiny")
DEFAULT_OUT = os.path.join(REPO, "results", "bench", "early_exit.json")

THRESHOLDS = (1.0, 0.95, 0.9, 0.8, 0.6)
QUICK_THRESHOLDS = (1.0, 0.9, 0.6)
EXIT_LAYERS = (2, 4)
CALM_THRESHOLDS = (0.95, 0.9, 0.8, 0.6)
QUICK_CALM_THRESHOLDS = (0.9, 0.6)
# (name, vocab_reduction, vocab_k or None for the fork's schedule, thresholds, quick thresholds)
CALM_REDUCTIONS = (("fixed256", "VOCAB_FIXED", 256, (0.9, 0.6), (0.6,)),
                   ("decaying", "VOCAB_DECAYING", None, (0.9, 0.6), (0.6,)),
                   ("adaptive", "VOCAB_ADAPTIVE", None, (0.9, 0.6), (0.6,)))
FAMILIES = ("free", "static", "calm")
BATCHES = (1, 8)
MIN_PROMPT_TOKENS, MAX_PROMPT_TOKENS = 64, 200
MAX_TRAIN_LINE_OVERLAP = 0.30
LONG_LINE = 20  # characters (stripped) for a line to count in the overlap checks


# ----------------------------------------------------------------------------------------------
# Prompts from the held-out split


def _read(root, rel):
    with open(os.path.join(root, rel), "rb") as f:
        return f.read()


def _long_lines(text):
    return [s for s in (line.strip() for line in text.split("\n")) if len(s) >= LONG_LINE]


def build_prompts(sp, n, target_tokens):
    """Returns n prompts cut from held-out files (see the module docstring) and the split facts."""
    with open(MANIFEST, encoding="utf-8") as f:
        manifest = json.load(f)
    root = manifest["stdlib_root"]
    eval_files, train_files = manifest["eval_files"], manifest["train_files"]
    if set(eval_files) & set(train_files):
        raise SystemExit("corpus_manifest.json: a file is in both splits")
    for split, files in (("eval", eval_files), ("train", train_files)):
        h = hashlib.sha256()
        for rel in files:
            h.update(_read(root, rel))
        if h.hexdigest() != manifest["sha256_concat"][split]:
            raise SystemExit(f"{root}: the {split} files do not hash to corpus_manifest.json's "
                             "sha256; the stdlib on this machine is not the training corpus")
    train_texts = [_read(root, rel).decode("utf-8") for rel in train_files]
    train_lines = set()
    for t in train_texts:
        train_lines.update(_long_lines(t))
    train_concat = "\x00".join(train_texts)

    def overlap(text):
        lines = _long_lines(text)
        return sum(l in train_lines for l in lines) / len(lines) if lines else 1.0

    candidates = []
    for rel in sorted(eval_files):
        assert hashlib.sha1(rel.encode("utf-8")).hexdigest()[0] == "0", rel
        if rel.startswith("encodings/"):
            continue
        text = _read(root, rel).decode("utf-8")
        if len(sp.encode(text)) < 4 * MAX_PROMPT_TOKENS or overlap(text) > MAX_TRAIN_LINE_OVERLAP:
            continue
        candidates.append((rel, text))
    if len(candidates) < n:
        raise SystemExit(f"only {len(candidates)} held-out files qualify; asked for {n}")
    picked = [candidates[round(i * (len(candidates) - 1) / max(1, n - 1))] for i in range(n)]

    prompts = []
    for rel, text in picked:
        lines = text.split("\n")
        starts = [i for i, l in enumerate(lines)
                  if l.startswith(("def ", "class ", "    def ", "async def "))]
        offsets = [0]
        for l in lines:
            offsets.append(offsets[-1] + len(l) + 1)
        middle = len(text) / 2
        for start in sorted(starts, key=lambda i: abs(offsets[i] - middle)):
            chunk, prompt = [], None
            for line in lines[start:]:
                chunk.append(line)
                body = "\n".join(chunk) + "\n"
                ntok = 1 + len(sp.encode(body))  # BOS
                if ntok > MAX_PROMPT_TOKENS:
                    break
                if ntok >= max(target_tokens, MIN_PROMPT_TOKENS):
                    prompt = body
                    break
            if prompt is None or prompt in train_concat or overlap(prompt) > MAX_TRAIN_LINE_OVERLAP:
                continue
            prompts.append({"id": f"{rel}:{start + 1}", "prompt": prompt, "file": rel,
                            "line": start + 1, "prompt_tokens": 1 + len(sp.encode(prompt)),
                            "train_line_overlap": round(overlap(prompt), 3)})
            break
        else:
            raise SystemExit(f"{rel}: no window qualifies")
    split = {"stdlib_root": root, "python_version": manifest["python_version"],
             "rule": manifest["rule"], "heldout_files": len(eval_files),
             "heldout_sha256": manifest["sha256_concat"]["eval"], "sha256_verified": True,
             "candidate_files": len(candidates),
             "checks": "file in eval_files, not in train_files, sha1(path)[0]=='0'; window not a "
                       "substring of any training file; <= 30% of its >=20-char lines in training "
                       "files"}
    return prompts, split


# ----------------------------------------------------------------------------------------------
# Settings and runs


def make_settings(quick):
    """The method settings, plain first. Each is {name, family, policy, exit_layer, threshold,
    adaptive, vocab_reduction, vocab_k, sets}; `sets` are the --set arguments."""
    def setting(name, policy, sets, exit_layer=None, threshold=None, adaptive=False,
                vocab_reduction=None, vocab_k=None):
        return {"name": name, "family": policy.lower(), "policy": policy,
                "exit_layer": exit_layer, "threshold": threshold, "adaptive": adaptive,
                "vocab_reduction": vocab_reduction, "vocab_k": vocab_k, "sets": sets}

    out = [setting("plain", "PLAIN", [])]
    for layer in EXIT_LAYERS:
        for tau in (QUICK_THRESHOLDS if quick else THRESHOLDS):
            out.append(setting(f"free_l{layer}_t{tau:g}", "FREE",
                               ["method.early_exit.policy=FREE",
                                f"method.early_exit.exit_layer={layer}",
                                f"method.early_exit.threshold={tau:g}"],
                               exit_layer=layer, threshold=tau))
        out.append(setting(f"free_l{layer}_adaptive", "FREE",
                           ["method.early_exit.policy=FREE", f"method.early_exit.exit_layer={layer}",
                            "method.early_exit.threshold=0.9",
                            "method.early_exit.adaptive_threshold=true"],
                           exit_layer=layer, threshold=0.9, adaptive=True))
        out.append(setting(f"static_l{layer}", "STATIC",
                           ["method.early_exit.policy=STATIC",
                            f"method.early_exit.exit_layer={layer}"], exit_layer=layer))
    for tau in (QUICK_CALM_THRESHOLDS if quick else CALM_THRESHOLDS):
        out.append(setting(f"calm_t{tau:g}", "CALM",
                           ["method.early_exit.policy=CALM", f"method.early_exit.threshold={tau:g}"],
                           threshold=tau, vocab_reduction="VOCAB_FULL"))
    for name, reduction, k, taus, quick_taus in CALM_REDUCTIONS:
        for tau in (quick_taus if quick else taus):
            sets = ["method.early_exit.policy=CALM", f"method.early_exit.threshold={tau:g}",
                    f"method.early_exit.vocab_reduction={reduction}"]
            if k is not None:
                sets.append(f"method.early_exit.vocab_k={k}")
            out.append(setting(f"calm_{name}_t{tau:g}", "CALM", sets, threshold=tau,
                               vocab_reduction=reduction, vocab_k=k))
    return out


def select_settings(settings, only):
    """Plain and the settings that --only names: comma-separated families (free, static, calm)
    or fnmatch patterns on the setting names; each must pick at least one setting."""
    if not only:
        return settings
    picked = set()
    for word in (w.strip() for w in only.split(",")):
        if not word:
            continue
        hit = {s["name"] for s in settings[1:]
               if s["family"] == word or fnmatch.fnmatchcase(s["name"], word)}
        if not hit:
            raise SystemExit(f"--only {word}: no setting matches (families: {', '.join(FAMILIES)}; "
                             f"names: {', '.join(s['name'] for s in settings[1:])})")
        picked |= hit
    return [settings[0]] + [s for s in settings[1:] if s["name"] in picked]


def snapshot_binary(binary, workdir):
    """A private copy of the launcher, so that every run of the benchmark uses the same build even
    when build/ is rebuilt meanwhile (the project's code is linked statically into it). Waits for
    a build in progress: the file must exist and be unchanged for 30 s."""
    for _ in range(60):
        try:
            st = os.stat(binary)
            if time.time() - st.st_mtime > 30 and os.access(binary, os.X_OK):
                copy = os.path.join(workdir, "tessera")
                shutil.copy2(binary, copy)
                if os.stat(binary).st_mtime == st.st_mtime:
                    with open(copy, "rb") as f:
                        return copy, hashlib.sha256(f.read()).hexdigest()
        except OSError:
            pass
        time.sleep(10)
    raise SystemExit(f"{binary}: missing or changing for 10 minutes")


def generate(args, prompts_path, batch, sets, workdir):
    """One `tessera generate` call; returns its output records in prompt order."""
    out_path = os.path.join(workdir, "out.jsonl")
    cmd = [args.run_binary, "generate", "--model", args.model, "--prompts", prompts_path,
           "--output", out_path, "--max-new-tokens", str(args.max_new_tokens), "--ignore-eos",
           "--max-batch", str(batch), "--threads", str(args.threads)]
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}\nfailed ({proc.returncode}):\n{proc.stderr}")
    with open(out_path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def decode_time_ms(records, max_new_tokens):
    """Wall time of the decode steps of one call (see the module docstring), and its tokens."""
    for r in records:
        if r["generated_tokens"] != max_new_tokens:
            raise SystemExit(f"{r['id']}: {r['generated_tokens']} tokens, expected {max_new_tokens}")
    # A wave's first tokens come in one step (their times differ by the loop that records them);
    # the next wave's prompt pass starts after the wave's last token.
    waves = []
    for r in sorted(records, key=lambda r: r["timings"]["time_to_first_token_ms"]):
        t = r["timings"]
        if waves and t["time_to_first_token_ms"] < waves[-1]["end"]:
            waves[-1]["end"] = max(waves[-1]["end"], t["total_ms"])
            waves[-1]["size"] += 1
        else:
            waves.append({"start": t["time_to_first_token_ms"], "end": t["total_ms"], "size": 1})
    total = sum(w["end"] - w["start"] for w in waves)
    return total, sum(r["generated_tokens"] - 1 for r in records), [w["size"] for w in waves]


def check_waves(sizes, n, batch):
    """Every wave but the last holds --max-batch sequences."""
    expected = [batch] * (n // batch) + ([n % batch] if n % batch else [])
    if sizes != expected:
        raise SystemExit(f"waves of {sizes} sequences, expected {expected}")


def run_setting(args, prompts_path, batch, setting, workdir):
    """The alternating (plain, method) pairs of one setting at one batch size."""
    pairs, token_sets, method_records = [], [], None
    for rep in range(args.repeats):
        order = ("plain", "method") if rep % 2 == 0 else ("method", "plain")
        ms = {}
        for which in order:
            recs = generate(args, prompts_path, batch, [] if which == "plain" else setting["sets"],
                            workdir)
            ms[which], ntok, sizes = decode_time_ms(recs, args.max_new_tokens)
            check_waves(sizes, len(recs), batch)
            if which == "method":
                method_records = recs
                token_sets.append([r["token_ids"] for r in recs])
        pairs.append({"plain_ms": ms["plain"], "method_ms": ms["method"], "order": list(order)})
    return pairs, ntok, method_records, all(t == token_sets[0] for t in token_sets)


def run_plain(args, prompts_path, batch, workdir):
    """Plain runs alone (the reference tokens and the plain row of the table)."""
    times, tokens = [], []
    for _ in range(args.repeats):
        recs = generate(args, prompts_path, batch, [], workdir)
        ms, ntok, sizes = decode_time_ms(recs, args.max_new_tokens)
        check_waves(sizes, len(recs), batch)
        times.append(ms)
        tokens.append([r["token_ids"] for r in recs])
    return times, ntok, recs, all(t == tokens[0] for t in tokens)


# ----------------------------------------------------------------------------------------------
# Quality


def agreement(tokens, reference):
    """(prefix agreement, position-wise agreement), averaged over sequences."""
    prefix, positions = [], []
    for a, b in zip(tokens, reference):
        n = len(b)
        first = next((i for i in range(n) if a[i] != b[i]), n)
        prefix.append(first / n)
        positions.append(sum(x == y for x, y in zip(a, b)) / n)
    return statistics.mean(prefix), statistics.mean(positions)


class PlainScorer:
    """The plain model in transformers (float32): log-probs, argmax and exit-head confidences of
    given token ids. Results are cached by token ids."""

    def __init__(self, model_dir, threads):
        import torch
        from transformers import LlamaForCausalLM
        torch.set_num_threads(threads)
        self.torch = torch
        self.model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.cache = {}

    def score(self, prompt_ids, new_ids, exits=()):
        """For the new tokens: their log-prob under the plain model, the plain argmax at each of
        their positions and, per exit layer, (top-2 gap, exit argmax == plain argmax)."""
        key = (tuple(prompt_ids), tuple(new_ids), tuple(exits))
        if key in self.cache:
            return self.cache[key]
        torch = self.torch
        ids = torch.tensor([list(prompt_ids) + list(new_ids)])
        with torch.no_grad():
            out = self.model.model(input_ids=ids, output_hidden_states=True)
            # Row p predicts token p + 1: the new tokens are predicted by rows P-1 .. P+N-2.
            rows = slice(len(prompt_ids) - 1, len(prompt_ids) + len(new_ids) - 1)
            logits = self.model.lm_head(out.last_hidden_state[0, rows]).float()
            logp = torch.log_softmax(logits, -1)
            target = torch.tensor(new_ids)
            chosen = logp.gather(1, target[:, None])[:, 0].tolist()
            argmax = logits.argmax(-1)
            per_exit = {}
            for layer in exits:
                h = self.model.model.norm(out.hidden_states[layer][0, rows])
                p = torch.softmax(self.model.lm_head(h).float(), -1)
                top2 = p.topk(2, -1).values
                per_exit[layer] = ((top2[:, 0] - top2[:, 1]).tolist(),
                                   (p.argmax(-1) == argmax).tolist())
        result = (chosen, argmax.tolist(), per_exit)
        self.cache[key] = result
        return result


def quality(scorer, prompt_ids, records, reference_tokens, num_layers):
    """Quality figures of one run's outputs."""
    tokens = [r["token_ids"] for r in records]
    prefix, positions = agreement(tokens, reference_tokens)
    nll, count, own, exited_ok, exited = 0.0, 0, 0, 0, 0
    for ids, r in zip(prompt_ids, records):
        chosen, argmax, _ = scorer.score(ids, r["token_ids"])
        nll -= sum(chosen)
        count += len(chosen)
        own += sum(a == t for a, t in zip(argmax, r["token_ids"]))
        layers = (r.get("method_counters") or {}).get("token_layers")
        if layers:
            for t, a, l in zip(r["token_ids"], argmax, layers):
                if l < num_layers:
                    exited += 1
                    exited_ok += a == t
    return {"prefix_agreement": prefix, "position_agreement": positions,
            "perplexity": math.exp(nll / count), "own_prefix_agreement": own / count,
            "exited_token_agreement": exited_ok / exited if exited else None}


def calibration(scorer, prompt_ids, reference_tokens, exits):
    """Exit-head calibration on the plain greedy outputs (teacher-forced): for thresholds tau,
    the share of decode steps with top-2 gap > tau and how often the exit's argmax is the plain
    one on those steps. The first new token comes from the prompt pass, so it is left out."""
    gaps = {l: [] for l in exits}
    hits = {l: [] for l in exits}
    for ids, new in zip(prompt_ids, reference_tokens):
        _, _, per_exit = scorer.score(ids, new, exits)
        for l in exits:
            gaps[l] += per_exit[l][0][1:]
            hits[l] += per_exit[l][1][1:]
    curve = {}
    for l in exits:
        rows = []
        for k in range(0, 100):
            tau = k / 100
            sel = [h for g, h in zip(gaps[l], hits[l]) if g > tau]
            rows.append({"threshold": tau, "exit_rate": len(sel) / len(gaps[l]),
                         "exited_agreement": sum(sel) / len(sel) if sel else None})
        curve[str(l)] = {"steps": len(gaps[l]), "argmax_equals_final": sum(hits[l]) / len(hits[l]),
                         "mean_gap": statistics.mean(gaps[l]), "curve": rows}
    return curve


# ----------------------------------------------------------------------------------------------
# Report


def counters(records, num_layers):
    """Exit rate, mean layers per token, deep passes per decode step and the cost of the checks,
    over all sequences."""
    c = [r.get("method_counters") or {} for r in records]
    decode = sum(r["generated_tokens"] - 1 for r in records)
    layers = [l for x in c for l in x.get("token_layers", [])]
    exits = sum(x.get("exits", 0) for x in c)
    checks = sum(x.get("exit_checks", 0) for x in c)
    out = {"exits": exits, "exit_checks": checks, "decode_tokens": decode,
           # At most one exit per decode token: FREE checks each one once, CALM up to once per
           # check layer, STATIC exits every one without a check.
           "exit_rate": exits / decode,
           "checks_per_decode_token": checks / decode,
           "mean_layers_per_token": statistics.mean(layers) if layers else float(num_layers),
           # FREE and STATIC count their deep passes; CALM has none (None), plain is one a step.
           "deep_passes_per_decode_token": (sum(x.get("deep_passes", 0) for x in c) / decode
                                            if "deep_passes" in c[0] else None if c[0] else 1.0),
           "max_deep_chunk": max((x.get("max_deep_chunk", 0) for x in c), default=0)}
    if any("exit_check_rows" in x for x in c):
        rows = sum(x.get("exit_check_rows", 0) for x in c)
        out["exit_check_rows"] = rows
        out["check_rows_per_check"] = rows / checks if checks else None
    if any("exit_check_flops" in x for x in c):
        out["check_flops_per_decode_token"] = sum(x.get("exit_check_flops", 0) for x in c) / decode
    if any("kv_filled_layers" in x for x in c):
        out["kv_filled_layers_per_decode_token"] = (
            sum(x.get("kv_filled_layers", 0) for x in c) / decode)
    taus = [x["threshold"] for x in c if "threshold" in x]
    if taus:
        out["threshold_first"], out["threshold_last"] = taus[0], taus[-1]
        out["threshold_min"], out["threshold_max"] = min(taus), max(taus)
    return out


def print_table(results, names=None):
    """The rows of every batch size (those in `names` when given, plain always)."""
    head = (f"{'batch':>5} {'setting':<18} {'exit%':>6} {'layers':>6} {'rows/chk':>8} "
            f"{'MFLOP/t':>7} {'tok/s':>7} {'plain':>7} {'speedup':>7} {'prefix':>7} {'posw':>7} "
            f"{'ownpfx':>7} {'ppl':>6}")
    print(head)
    print("-" * len(head))
    for b in results["batches"]:
        for row in b["settings"]:
            if names is not None and row["name"] != "plain" and row["name"] not in names:
                continue
            q, t, k = row["quality"], row["timing"], row["counters"]
            rows = k.get("check_rows_per_check")
            flops = k.get("check_flops_per_decode_token")
            print(f"{b['batch']:>5} {row['name']:<18} {100 * k['exit_rate']:>6.1f} "
                  f"{k['mean_layers_per_token']:>6.2f} "
                  f"{f'{rows:.0f}' if rows is not None else '-':>8} "
                  f"{f'{flops / 1e6:.2f}' if flops is not None else '-':>7} "
                  f"{t['decode_tokens_per_s']:>7.0f} "
                  f"{t['plain_decode_tokens_per_s']:>7.0f} {t['speedup']:>6.2f}x "
                  f"{100 * q['prefix_agreement']:>6.1f}% {100 * q['position_agreement']:>6.1f}% "
                  f"{100 * q['own_prefix_agreement']:>6.1f}% {q['perplexity']:>6.3f}")
        print()


def expected_prefix_agreement(error, new_tokens):
    """Prefix agreement when each decode step independently picks a token other than the plain
    model's with probability `error` (the first new token comes from the prompt pass)."""
    stay = 1.0 - error
    return (sum(error * stay ** (k - 1) * k / new_tokens for k in range(1, new_tokens))
            + stay ** (new_tokens - 1))


def break_even(results, target_speedup):
    """Per exit layer at batch 1: the exit rate the target speedup needs, from the measured cost
    of a step that goes deep (FREE, threshold 1.0: check + all blocks) and of one that exits
    (STATIC: exit_layer blocks + head), time(e) = e * t_exit + (1 - e) * t_deep; and what the
    exit head's calibration gives at that exit rate."""
    b1 = {r["name"]: r for r in next(b for b in results["batches"] if b["batch"] == 1)["settings"]}
    out = {}
    for layer in EXIT_LAYERS:
        deep, static = b1.get(f"free_l{layer}_t1"), b1.get(f"static_l{layer}")
        if not deep or not static:
            continue
        # Per-setting plain medians cancel the drift between the settings' runs.
        t_deep = deep["timing"]["decode_ms"] / deep["timing"]["plain_decode_ms"]
        t_exit = static["timing"]["decode_ms"] / static["timing"]["plain_decode_ms"]
        need = (t_deep - 1.0 / target_speedup) / (t_deep - t_exit)
        row = {"deep_step_cost_vs_plain": t_deep, "exit_step_cost_vs_plain": t_exit,
               "exit_rate_needed": need}
        curve = results["calibration"][str(layer)]["curve"]
        reach = [c for c in curve if c["exit_rate"] >= need]
        if reach and 0 < need <= 1:
            c = max(reach, key=lambda c: c["threshold"])
            error = c["exit_rate"] * (1 - c["exited_agreement"])
            row.update({"calibration_threshold": c["threshold"], "calibration_exit_rate": c["exit_rate"],
                        "exited_agreement_there": c["exited_agreement"],
                        "decode_error_rate_there": error,
                        "expected_prefix_agreement_there":
                            expected_prefix_agreement(error, results["max_new_tokens"])})
        out[str(layer)] = row
    return out


def summary(results, target_agreement, target_speedup):
    """The fastest batch-1 setting with prefix (hence also position-wise) agreement >= target,
    and the exit rates the target speedup would need."""
    b1 = next(b for b in results["batches"] if b["batch"] == 1)
    ok = [r for r in b1["settings"] if r["name"] != "plain"
          and min(r["quality"]["prefix_agreement"], r["quality"]["position_agreement"])
          >= target_agreement]
    best = max(ok, key=lambda r: r["timing"]["speedup"]) if ok else None
    # Largest per-step error that keeps the expected prefix agreement at the target.
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if expected_prefix_agreement(mid, results["max_new_tokens"]) >= target_agreement:
            lo = mid
        else:
            hi = mid
    return {"target_agreement": target_agreement, "target_speedup": target_speedup,
            "best_batch1": best["name"] if best else None,
            "best_batch1_speedup": best["timing"]["speedup"] if best else None,
            "best_batch1_exit_rate": best["counters"]["exit_rate"] if best else None,
            "best_batch1_mean_layers": best["counters"]["mean_layers_per_token"] if best else None,
            "target_reached": bool(best and best["timing"]["speedup"] >= target_speedup),
            "max_decode_error_rate_for_target_agreement": lo,
            "break_even": break_even(results, target_speedup)}


# ----------------------------------------------------------------------------------------------
# Merging into stored results


def check_mergeable(stored, args, prompts, num_layers):
    """The stored results were measured on the same prompts, model and generation length."""
    same = {"model": (stored["model"], os.path.relpath(args.model, REPO)),
            "max_new_tokens": (stored["max_new_tokens"], args.max_new_tokens),
            "num_layers": (stored["num_layers"], num_layers),
            "prompts": ([(p["id"], p["prompt"]) for p in stored["prompts"]],
                        [(p["id"], p["prompt"]) for p in prompts])}
    for what, (a, b) in same.items():
        if a != b:
            raise SystemExit(f"--merge: {args.out} has other {what}; run without --merge into "
                             "another --out")


def check_plain_tokens(stored, raw):
    """This invocation's plain tokens are the stored plain row's at every batch size both have:
    the stored rows' agreement was measured against them."""
    for b in stored["batches"]:
        if b["batch"] not in raw:
            continue
        plain = next(r for r in b["settings"] if r["name"] == "plain")
        if plain["token_ids"] != [r["token_ids"] for r in raw[b["batch"]][0][2]]:
            raise SystemExit(f"--merge: the plain tokens at batch {b['batch']} differ from the "
                             "stored ones (another launcher or model?); run without --merge")


def merge(stored, new, run):
    """The stored results with this invocation's rows added: a row of the same name replaces
    the stored one, the stored plain row stays (its tokens are this run's; its timing is the
    stored runs'), and `runs` lists every invocation with its repeats and launcher."""
    if "runs" not in stored:  # written before --merge existed: one invocation, every row
        stored["runs"] = [{"settings": sorted({r["name"] for b in stored["batches"]
                                               for r in b["settings"] if r["name"] != "plain"}),
                           "only": None, "repeats": stored["repeats"],
                           "threads": stored["threads"],
                           "batches": [b["batch"] for b in stored["batches"]],
                           "binary_sha256": stored.get("binary_sha256"),
                           "elapsed_s": stored.get("elapsed_s")}]
        for b in stored["batches"]:
            for row in b["settings"]:
                row.setdefault("run", 0)
                row.setdefault("family", row["policy"].lower())
    index = len(stored["runs"])
    stored["runs"].append(run)
    order = {s["name"]: i for i, s in enumerate(make_settings(False))}
    for nb in new["batches"]:
        target = next((b for b in stored["batches"] if b["batch"] == nb["batch"]), None)
        if target is None:
            target = {"batch": nb["batch"], "settings": []}
            stored["batches"].append(target)
        rows = {r["name"]: r for r in target["settings"]}
        for row in nb["settings"]:
            if row["name"] == "plain" and "plain" in rows:
                continue
            row["run"] = index
            rows[row["name"]] = row
        target["settings"] = sorted(rows.values(),
                                    key=lambda r: (order.get(r["name"], len(order)), r["name"]))
    stored["batches"].sort(key=lambda b: b["batch"])
    return stored


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=DEFAULT_BINARY)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--out", default=DEFAULT_OUT, help="results JSON (default %(default)s)")
    ap.add_argument("--prompts", type=int, default=24, help="held-out prompts (default 24)")
    ap.add_argument("--prompt-tokens", type=int, default=128,
                    help="prompt length to reach, BOS included (64-200; default 128)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="(plain, method) pairs per setting")
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)))
    ap.add_argument("--threads", type=int, default=1,
                    help="--threads of tessera generate (default 1; 0: one per core)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 6 prompts, thresholds 1.0/0.9/0.6 (CALM 0.9/0.6, the "
                         "reductions 0.6), 1 repeat")
    ap.add_argument("--only", default="",
                    help="run only these settings (plain always): comma-separated families "
                         f"({', '.join(FAMILIES)}) or fnmatch patterns on the names, e.g. calm "
                         "or 'free_l4_*,static_l4'")
    ap.add_argument("--merge", action="store_true",
                    help="add the settings to the results already at --out instead of replacing "
                         "the file (same prompts, model and new tokens; the plain tokens must be "
                         "the stored ones)")
    args = ap.parse_args()
    if args.quick:
        args.prompts, args.repeats = min(args.prompts, 6), 1
    if not MIN_PROMPT_TOKENS <= args.prompt_tokens <= MAX_PROMPT_TOKENS:
        ap.error("--prompt-tokens must be within 64-200")
    batches = [int(b) for b in args.batches.split(",")]
    settings = select_settings(make_settings(args.quick), args.only)
    stored = None
    if args.merge:
        if not os.path.exists(args.out):
            ap.error(f"--merge: {args.out} does not exist")
        with open(args.out, encoding="utf-8") as f:
            stored = json.load(f)
    elif args.only and os.path.exists(args.out):
        ap.error(f"--only without --merge would replace {args.out} with a subset; pass --merge "
                 "or another --out")

    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=os.path.join(args.model, "tokenizer.model"))
    with open(os.path.join(args.model, "config.json"), encoding="utf-8") as f:
        num_layers = json.load(f)["num_hidden_layers"]
    prompts, split = build_prompts(sp, args.prompts, args.prompt_tokens)
    if stored is not None:
        check_mergeable(stored, args, prompts, num_layers)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    prompts_path = os.path.splitext(args.out)[0] + ".prompts.jsonl"
    with open(prompts_path, "w", encoding="utf-8") as f:
        for p in prompts:
            f.write(json.dumps({"id": p["id"], "prompt": p["prompt"]}) + "\n")
    prompt_ids = [[1] + sp.encode(p["prompt"]) for p in prompts]
    print(f"{len(prompts)} held-out prompts, {min(len(p) for p in prompt_ids)}-"
          f"{max(len(p) for p in prompt_ids)} tokens -> {prompts_path}", flush=True)

    started = time.time()
    results = {"model": os.path.relpath(args.model, REPO), "binary": os.path.relpath(args.binary, REPO),
               "max_new_tokens": args.max_new_tokens, "repeats": args.repeats,
               "threads": args.threads, "quick": args.quick, "num_layers": num_layers,
               "cpu_count": os.cpu_count(), "split": split, "prompts": prompts,
               "prompts_file": os.path.relpath(prompts_path, REPO), "batches": []}

    with tempfile.TemporaryDirectory() as workdir:
        args.run_binary, binary_sha256 = snapshot_binary(args.binary, workdir)
        results["binary_sha256"] = binary_sha256
        run = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
               "settings": [s["name"] for s in settings[1:]], "only": args.only or None,
               "repeats": args.repeats, "threads": args.threads, "batches": batches,
               "binary_sha256": binary_sha256, "plain_decode_ms": {}}
        raw = {}
        for batch in batches:
            times, ntok, plain_recs, det = run_plain(args, prompts_path, batch, workdir)
            if [r["prompt_tokens"] for r in plain_recs] != [len(p) for p in prompt_ids]:
                raise SystemExit("the prompt lengths differ from the tokenizer's")
            raw[batch] = [("plain", None, plain_recs, {"plain_ms": times, "tokens": ntok,
                                                       "deterministic": det})]
            run["plain_decode_ms"][str(batch)] = times
            for s in settings[1:]:
                t0 = time.time()
                pairs, ntok, recs, det = run_setting(args, prompts_path, batch, s, workdir)
                raw[batch].append((s["name"], s, recs, {"pairs": pairs, "tokens": ntok,
                                                        "deterministic": det}))
                speed = statistics.median(p["plain_ms"] / p["method_ms"] for p in pairs)
                print(f"batch {batch} {s['name']:<18} speedup {speed:.2f}x "
                      f"({time.time() - t0:.0f} s)", flush=True)

        if stored is not None:
            check_plain_tokens(stored, raw)
        scorer = PlainScorer(args.model, max(1, os.cpu_count() or 1))
        for batch in batches:
            plain_recs = raw[batch][0][2]
            reference = [r["token_ids"] for r in plain_recs]
            rows = []
            for name, s, recs, timing in raw[batch]:
                if s is None:
                    ms = statistics.median(timing["plain_ms"])
                    t = {"decode_ms_runs": timing["plain_ms"], "decode_ms": ms,
                         "decode_tokens_per_s": timing["tokens"] / ms * 1e3,
                         "plain_decode_tokens_per_s": timing["tokens"] / ms * 1e3,
                         "speedup": 1.0, "tokens_identical_across_repeats": timing["deterministic"]}
                    s = settings[0]
                else:
                    pairs = timing["pairs"]
                    m = statistics.median(p["method_ms"] for p in pairs)
                    pm = statistics.median(p["plain_ms"] for p in pairs)
                    t = {"pairs": pairs, "decode_ms": m, "plain_decode_ms": pm,
                         "decode_tokens_per_s": timing["tokens"] / m * 1e3,
                         "plain_decode_tokens_per_s": timing["tokens"] / pm * 1e3,
                         "speedup": statistics.median(p["plain_ms"] / p["method_ms"] for p in pairs),
                         "speedup_min": min(p["plain_ms"] / p["method_ms"] for p in pairs),
                         "speedup_max": max(p["plain_ms"] / p["method_ms"] for p in pairs),
                         "tokens_identical_across_repeats": timing["deterministic"]}
                rows.append({"name": name, "family": s["family"], "policy": s["policy"],
                             "exit_layer": s["exit_layer"], "threshold": s["threshold"],
                             "adaptive": s["adaptive"], "vocab_reduction": s["vocab_reduction"],
                             "vocab_k": s["vocab_k"], "set": s["sets"], "timing": t,
                             "counters": counters(recs, num_layers),
                             "quality": quality(scorer, prompt_ids, recs, reference, num_layers),
                             "token_ids": [r["token_ids"] for r in recs]})
            results["batches"].append({"batch": batch, "settings": rows})
        b1 = raw[batches[0]][0][2]
        results["plain_tokens_identical_across_batches"] = all(
            [r["token_ids"] for r in raw[b][0][2]] == [r["token_ids"] for r in b1] for b in batches)
        results["plain_matches_transformers_argmax"] = statistics.mean(
            row["quality"]["own_prefix_agreement"]
            for b in results["batches"] for row in b["settings"] if row["name"] == "plain")
        if stored is None or "calibration" not in stored:
            results["calibration"] = calibration(scorer, prompt_ids,
                                                 [r["token_ids"] for r in b1], EXIT_LAYERS)
    run["elapsed_s"] = round(time.time() - started, 1)
    if stored is None:
        results["elapsed_s"] = run["elapsed_s"]
        results["runs"] = [run]
        for b in results["batches"]:
            for row in b["settings"]:
                row["run"] = 0
    else:
        results = merge(stored, results, run)
    results["summary"] = summary(results, 0.98, 1.3)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    print()
    print_table(results, {s["name"] for s in settings[1:]})
    print("columns: exit% = exits / decode tokens; layers = mean blocks per new token; tok/s = "
          "decode tokens/s (median); plain = the interleaved plain runs; speedup = median of "
          "plain/method decode time over adjacent pairs; prefix / posw = greedy agreement with "
          "plain (before the first divergence / position-wise); ownpfx = new tokens equal to the "
          "plain argmax given the same prefix; ppl = perplexity of the new tokens under the "
          "plain model")
    for l, c in results["calibration"].items():
        pts = {r["threshold"]: r for r in c["curve"]}
        desc = ", ".join(f"tau {t:g}: exit {100 * pts[t]['exit_rate']:.0f}% / agree "
                         f"{100 * (pts[t]['exited_agreement'] or 0):.1f}%"
                         for t in (0.0, 0.6, 0.8, 0.9, 0.95) if t in pts)
        print(f"calibration exit {l} (teacher-forced on plain outputs): {desc}")
    print(f"plain tokens identical at every batch size: "
          f"{results['plain_tokens_identical_across_batches']}; plain tokens = transformers "
          f"argmax: {100 * results['plain_matches_transformers_argmax']:.1f}%")
    sm = results["summary"]
    print(f"best at batch 1 with >= {100 * sm['target_agreement']:.0f}% agreement: "
          f"{sm['best_batch1']} ({sm['best_batch1_speedup']:.2f}x, exit rate "
          f"{100 * sm['best_batch1_exit_rate']:.1f}%); {sm['target_speedup']}x reached: "
          f"{sm['target_reached']}" if sm["best_batch1"] else "no setting reaches the agreement")
    print(f"{100 * sm['target_agreement']:.0f}% prefix agreement over {args.max_new_tokens} tokens "
          f"allows a per-step error rate of {100 * sm['max_decode_error_rate_for_target_agreement']:.3f}%")
    for l, b in sm["break_even"].items():
        line = (f"exit {l}: deep step {b['deep_step_cost_vs_plain']:.2f}, exit step "
                f"{b['exit_step_cost_vs_plain']:.2f} x plain; {sm['target_speedup']}x needs exit rate "
                f"{100 * b['exit_rate_needed']:.0f}%")
        if "calibration_threshold" in b:
            line += (f" -> tau {b['calibration_threshold']:.2f}, exited agreement "
                     f"{100 * b['exited_agreement_there']:.1f}%, per-step error "
                     f"{100 * b['decode_error_rate_there']:.2f}%, expected prefix agreement "
                     f"{100 * b['expected_prefix_agreement_there']:.1f}%")
        print(line)
    print(f"{'merged into' if stored is not None else 'wrote'} {args.out} "
          f"({run['elapsed_s']:.0f} s)")


if __name__ == "__main__":
    main()
