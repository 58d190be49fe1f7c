#!/usr/bin/env python3
"""HARP benchmark: quality and cost of hesitation-aware reframing (mode EXACT) against the plain
runtime, on the embedded model (models/tessera-code-tiny), in the same invocation.

Settings: plain, HARP (mode EXACT) with theta_bits in {0.5, 1, 2, 3} x delta in {0.1, 0.2},
beta 0.5, and modes SHADOW_LAZY and KV_NOISE at theta 1 and 2, delta 0.2.

Tasks:
  * next-line completion on held-out code: the prompts are the early-exit benchmark's windows of
    the held-out CPython files (tools/bench/early_exit.py, build_prompts: the split is checked
    against tools/train/corpus_manifest.json), each ending at a line end; windows whose next
    line in the file is blank are dropped. `tessera generate` makes --max-new-tokens tokens
    (--ignore-eos); the completion is the text up to its first newline, scored as exact match
    with the file's next line and as difflib's similarity ratio. Greedy, and nucleus
    (temperature 0.7, top_p 0.9, seed 5; the plain run samples with the same seed).
  * code_passkey (configs/tasks/code_passkey.textproto, the first --passkey-limit samples,
    all 60 by default, greedy): `tessera eval` accuracy; prompts of up to ~1000 tokens, so each hesitation
    recomputes a long sequence.

Cost. Next-line: decode time as in tools/bench/early_exit.py (the generator's timings, prefill
excluded, --max-batch 1), median over --repeats adjacent (plain, HARP) pairs in alternating
order of HARP / plain; this is against the plain decoder WITH its KV cache (the HARP paper's
x1.16-x1.29 is against a decoder without one). code_passkey: eval wall time HARP / plain (one
run each; prefill included). Counters: hesitation rate (hesitations / checked tokens), reframed
passes and recomputed tokens per generated token, mean entropy in bits.

    python3 tools/bench/harp.py                      # about 15 min on 2 cores
    python3 tools/bench/harp.py --quick --out /tmp/harp_quick.json
    python3 tools/bench/plot_harp.py                 # methods/harp/quality_vs_cost.png

Needs sentencepiece (prompt lengths).
"""
import argparse
import difflib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from early_exit import (DEFAULT_BINARY, DEFAULT_MODEL, MANIFEST, REPO,  # noqa: E402
                        build_prompts, decode_time_ms, snapshot_binary)

DEFAULT_OUT = os.path.join(REPO, "results", "bench", "harp.json")
THETAS = (0.5, 1.0, 2.0, 3.0)
DELTAS = (0.1, 0.2)
BETA = 0.5
SAMPLINGS = {"greedy": [], "nucleus": ["--temperature", "0.7", "--top-p", "0.9", "--seed", "5"]}


def settings(quick):
    thetas = (1.0, 3.0) if quick else THETAS
    out = [{"name": "plain", "sets": []}]
    for theta in thetas:
        for delta in DELTAS:
            out.append({"name": f"harp_t{theta:g}_d{delta:g}", "theta_bits": theta,
                        "delta": delta, "beta_vanilla": BETA,
                        "sets": [f"method.harp.theta_bits={theta}", f"method.harp.delta={delta}",
                                 f"method.harp.beta_vanilla={BETA}"]})
    for mode, prefix in (("SHADOW_LAZY", "shadow"), ("KV_NOISE", "kvnoise")):
        for theta in ((1.0,) if quick else (1.0, 2.0)):
            out.append({"name": f"{prefix}_t{theta:g}_d0.2", "theta_bits": theta, "delta": 0.2,
                        "beta_vanilla": BETA, "mode": mode,
                        "sets": [f"method.harp.theta_bits={theta}", "method.harp.delta=0.2",
                                 f"method.harp.beta_vanilla={BETA}", f"method.harp.mode={mode}"]})
    return out


def next_line_prompts(sp, n, target_tokens):
    with open(MANIFEST, encoding="utf-8") as f:
        root = json.load(f)["stdlib_root"]
    prompts, split = build_prompts(sp, n, target_tokens)
    kept = []
    for p in prompts:
        with open(os.path.join(root, p["file"]), encoding="utf-8") as f:
            lines = f.read().split("\n")
        target = lines[p["line"] - 1 + p["prompt"].count("\n")]
        if target.strip():
            kept.append(dict(p, target=target))
    return kept, split


def generate(args, prompts_path, sampling, sets, workdir):
    out_path = os.path.join(workdir, "out.jsonl")
    cmd = [args.run_binary, "generate", "--model", args.model, "--prompts", prompts_path,
           "--output", out_path, "--max-new-tokens", str(args.max_new_tokens), "--ignore-eos",
           "--max-batch", "1", "--threads", str(args.threads)] + SAMPLINGS[sampling]
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}\nfailed ({proc.returncode}):\n{proc.stderr}")
    with open(out_path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def line_scores(records, prompts):
    exact, similarity = [], []
    for r, p in zip(records, prompts):
        line = r["text"].split("\n", 1)[0]
        exact.append(line == p["target"])
        similarity.append(difflib.SequenceMatcher(None, line, p["target"]).ratio())
    return statistics.mean(exact), statistics.mean(similarity)


def harp_counters(counter_dicts, generated):
    total = {}
    for c in counter_dicts:
        for k, v in c.items():
            if isinstance(v, (int, float)):
                total[k] = total.get(k, 0.0) + v
    checked = total.get("checked_tokens", 0.0)
    if not checked:
        return {}
    return {"hesitation_rate": total.get("hesitations", 0.0) / checked,
            "mean_entropy_bits": total.get("entropy_bits_sum", 0.0) / checked,
            "reframed_per_token": total.get("reframed_passes", 0.0) / generated,
            "recomputed_per_token": total.get("tokens_recomputed", 0.0) / generated,
            "reframe_ms": total.get("reframe_ms", 0.0)}


def next_line_setting(args, prompts, prompts_path, sampling, setting, workdir):
    ratios, plain_records, method_records = [], None, None
    for rep in range(args.repeats):
        order = ("plain", "method") if rep % 2 == 0 else ("method", "plain")
        times = {}
        for which in order:
            sets = [] if which == "plain" else setting["sets"]
            records = generate(args, prompts_path, sampling, sets, workdir)
            times[which] = decode_time_ms(records, args.max_new_tokens)[0]
            if which == "plain":
                plain_records = records
            else:
                method_records = records
        ratios.append(times["method"] / times["plain"])
    exact, similarity = line_scores(method_records, prompts)
    plain_exact, plain_similarity = line_scores(plain_records, prompts)
    generated = sum(r["generated_tokens"] for r in method_records)
    row = {"name": setting["name"], "sampling": sampling, "exact_match": exact,
           "similarity": similarity, "plain_exact_match": plain_exact,
           "plain_similarity": plain_similarity, "cost_vs_plain": statistics.median(ratios),
           "cost_ratios": ratios,
           "tokens_changed": sum(a["token_ids"] != b["token_ids"]
                                 for a, b in zip(method_records, plain_records))}
    row.update(harp_counters([r.get("method_counters", {}) for r in method_records], generated))
    return row


def passkey(args, setting, workdir):
    out_dir = os.path.join(workdir, "eval_" + setting["name"])
    cmd = [args.run_binary, "eval", "--config", "configs/tasks/code_passkey.textproto", "--limit",
           str(args.passkey_limit), "--output-dir", out_dir, "--threads", str(args.threads)]
    for s in setting["sets"]:
        cmd += ["--set", s]
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    wall = time.time() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}\nfailed ({proc.returncode}):\n{proc.stderr}")
    name = next(f for f in os.listdir(out_dir) if f.startswith("results_"))
    with open(os.path.join(out_dir, name), encoding="utf-8") as f:
        result = json.load(f)
    metrics = next(iter(result["results"].values()))
    method = result["compute"].get("method", {})
    return {"name": setting["name"], "accuracy": metrics["acc,none"], "wall_s": wall,
            "hesitation_rate": method.get("hesitation_rate"),
            "tokens_recomputed": method.get("tokens_recomputed")}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=DEFAULT_BINARY)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--prompts", type=int, default=48, help="held-out windows before the "
                    "blank-next-line filter (default 48)")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--passkey-limit", type=int, default=60, help="default: all 60 samples")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="smoke test: 8 prompts, 1 repeat, "
                    "theta 1 and 3, 6 passkey samples")
    args = ap.parse_args()
    if args.quick:
        args.prompts, args.repeats, args.passkey_limit = 8, 1, 6

    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=os.path.join(args.model, "tokenizer.model"))
    prompts, split = next_line_prompts(sp, args.prompts, args.prompt_tokens)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    prompts_path = os.path.splitext(args.out)[0] + ".prompts.jsonl"
    with open(prompts_path, "w", encoding="utf-8") as f:
        for p in prompts:
            f.write(json.dumps({"id": p["id"], "prompt": p["prompt"]}) + "\n")
    print(f"{len(prompts)} next-line prompts -> {prompts_path}", flush=True)
    started = time.time()
    with tempfile.TemporaryDirectory() as workdir:
        args.run_binary, binary_sha = snapshot_binary(args.binary, workdir)
        rows = []
        for sampling in SAMPLINGS:
            for s in settings(args.quick)[1:]:
                row = next_line_setting(args, prompts, prompts_path, sampling, s, workdir)
                rows.append(row)
                print(f"{sampling:8s} {row['name']:16s} exact {row['exact_match']:.3f} "
                      f"(plain {row['plain_exact_match']:.3f}) sim {row['similarity']:.3f} "
                      f"(plain {row['plain_similarity']:.3f}) hesitation "
                      f"{row.get('hesitation_rate', 0):.3f} cost x{row['cost_vs_plain']:.2f}",
                      flush=True)
        passkey_rows = []
        for s in settings(args.quick):
            row = passkey(args, s, workdir)
            passkey_rows.append(row)
            print(f"passkey  {row['name']:16s} accuracy {row['accuracy']:.3f} wall "
                  f"{row['wall_s']:.1f} s hesitation {row['hesitation_rate']}", flush=True)
    plain_wall = passkey_rows[0]["wall_s"]
    for row in passkey_rows:
        row["wall_vs_plain"] = row["wall_s"] / plain_wall
    results = {"model": os.path.relpath(args.model, REPO), "binary_sha256": binary_sha,
               "max_new_tokens": args.max_new_tokens, "repeats": args.repeats,
               "threads": args.threads, "quick": args.quick, "cpu_count": os.cpu_count(),
               "beta_vanilla": BETA, "split": split, "next_line_prompts": len(prompts),
               "next_line": rows, "code_passkey": passkey_rows,
               "passkey_limit": args.passkey_limit, "seconds": time.time() - started}
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    print(f"-> {args.out} ({results['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
