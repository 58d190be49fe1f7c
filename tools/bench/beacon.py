#!/usr/bin/env python3
"""Activation Beacon on the embedded model (trained on 1024 tokens) with the beacon tensors of
models/tessera-code-tiny-beacon (window 256, ratios 2..32, adapt-256): key retrieval in code and
perplexity of long held-out code past the window, and memory and time against the input length.

1. Key retrieval: samples of 1k..16k tokens at five depths (make_code_passkey's format, filler
   from the held-out code files of configs/tasks/data/code_files.jsonl), scored by `tessera eval`
   (greedy; the first number of the continuation must be the key) for: the plain model (1024
   only), linear / dynamic (NTK) / YaRN rope scaling by 8 (config.json variants run past the
   window, up to 8k), the trained beacon model, and the same mechanism with the reference's
   initialisation (no trained tensors: beacons projected by the base weights).
2. Perplexity: held-out stdlib files (tools/train/build_corpus.py's eval split) joined into texts
   of about --ppl-tokens tokens; beacon (one stream per text, the reference harness), the plain
   model (lm-evaluation-harness rolling windows of 1024), YaRN x8 (one window per text).
3. Cost: `tessera bench` prefill of 1k..128k random tokens at a fixed ratio of 256 (one beacon per
   window, so that 128k stays inside the 1024 positions; quality is not measured there): time per
   token, KV entries against the formula, peak RSS; plain prefill (dynamic scaling) up to
   --plain-max; at tp 2 and pp 2 (mpirun) for --layout-tokens.

    python3 tools/bench/beacon.py --tessera build/launcher/tessera --out build/bench/beacon
writes OUT/results.json and methods/beacon/quality_vs_cost.png.
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import homer as shared  # noqa: E402  (variant, make_data, passkey, bench, run)

BEACON = os.path.join(REPO, "models", "tessera-code-tiny-beacon")
PLAIN = shared.MODEL
# The method on, every setting from the checkpoint's config.json (N of adapt-N restated).
BEACON_ON = ["--set", "method.beacon.adapt_new_tokens=256"]


def untrained(out):
    """The embedded model with the beacon keys of BEACON's config but no beacon tensors."""
    d = os.path.join(out, "models", "beacon-init")
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(PLAIN):
        if f != "config.json" and not os.path.exists(os.path.join(d, f)):
            os.symlink(os.path.join(PLAIN, f), os.path.join(d, f))
    config = json.load(open(os.path.join(BEACON, "config.json")))
    config.pop("beacon_param")  # the tensors are optional: the reference's initialisation
    json.dump(config, open(os.path.join(d, "config.json"), "w"), indent=1)
    return d


def long_texts(out, tokens, count):
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=os.path.join(PLAIN, "tokenizer.model"))
    data = os.environ.get("TESSERA_CORPUS", "/root/tessera-train/data")
    docs = [json.loads(l)["text"] for l in open(os.path.join(data, "corpus_eval.jsonl"))]
    path = os.path.join(out, f"ppl_{tokens}.jsonl")
    texts, current, n = [], [], 0
    for d in docs:
        current.append(d)
        n += len(sp.encode(d)) + 1
        if n >= tokens:
            texts.append("\n".join(current))
            current, n = [], 0
            if len(texts) == count:
                break
    with open(path, "w") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
    return path


def perplexity(tessera, out, name, model, data, window, max_seq, extra):
    d = os.path.join(out, "ppl", name)
    shutil.rmtree(d, ignore_errors=True)
    config = os.path.join(out, "ppl", f"{name}.textproto")
    os.makedirs(os.path.dirname(config), exist_ok=True)
    seq = f" max_seq_len: {max_seq}" if max_seq else ""
    win = f" window: {window}" if window else ""
    with open(config, "w") as f:
        f.write(f'model {{ path: "{model}"{seq} }}\n'
                f'task {{ perplexity {{ data: "{data}"{win} }} }}\noutput {{ dir: "{d}" }}\n')
    shared.run([tessera, "eval", "--config", config] + extra, d + ".log")
    (path,) = glob.glob(os.path.join(d, "results_*.json"))
    r = json.load(open(path))["results"]
    (task,) = r.values()
    return {"perplexity": task["perplexity,none"] if "perplexity,none" in task else task["perplexity"],
            "seconds": float(json.load(open(path))["total_evaluation_time_seconds"])}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tessera", default=os.path.join(REPO, "build/launcher/tessera"))
    ap.add_argument("--mpiexec", default="mpiexec")
    ap.add_argument("--out", default=os.path.join(REPO, "build/bench/beacon"))
    ap.add_argument("--lengths", default="1024,2048,4096,8192,16384")
    ap.add_argument("--scaled-max", type=int, default=8192)
    ap.add_argument("--per-cell", type=int, default=4)
    ap.add_argument("--ppl-tokens", type=int, default=8192)
    ap.add_argument("--ppl-texts", type=int, default=4)
    ap.add_argument("--bench-lengths", default="1024,4096,16384,32768,65536,131072")
    ap.add_argument("--plain-max", type=int, default=16384)
    ap.add_argument("--layout-tokens", type=int, default=32768)
    ap.add_argument("--plot", default=os.path.join(REPO, "methods/beacon/quality_vs_cost.png"))
    ap.add_argument("--reuse", action="store_true")
    ap.add_argument("--cost-only", action="store_true",
                    help="rerun the cost part only, over an earlier run's results.json in --out")
    args = ap.parse_args()
    shared.REUSE = args.reuse
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    lengths = [int(x) for x in args.lengths.split(",")]
    files = shared.make_data(out, lengths, args.per_cell, 4242)
    scaled = {name: shared.variant(out, name) for name in ("linear", "dynamic", "yarn")}
    init = untrained(out)
    scaled_lengths = [x for x in lengths if x <= args.scaled_max]
    methods = {  # model, flags, lengths, max_seq_len
        "plain": (PLAIN, [], [1024], 0),
        "linear x8": (scaled["linear"], [], scaled_lengths, max(scaled_lengths) + 64),
        "dynamic x8": (scaled["dynamic"], [], scaled_lengths, max(scaled_lengths) + 64),
        "YaRN x8": (scaled["yarn"], [], scaled_lengths, max(scaled_lengths) + 64),
        "beacon (trained)": (BEACON, BEACON_ON,
                             lengths, 0),
        "beacon (initialisation)": (init, BEACON_ON,
                                    lengths, 0),
    }
    results = {"retrieval": {}, "perplexity": {}, "prefill": {}, "layouts": {}}
    if args.cost_only:
        results = json.load(open(os.path.join(out, "results.json")))
        results["prefill"], results["layouts"] = {}, {}
    for name, (model, extra, ls, max_seq) in ({} if args.cost_only else methods).items():
        for length in ls:
            tag = name.replace(" ", "_").replace("(", "").replace(")", "")
            r = shared.passkey(args.tessera, out, tag, model, files[length], length, extra, max_seq)
            results["retrieval"].setdefault(name, {})[length] = r
            print(f"{name:24s} {length:6d}: retrieval {r['acc']:.3f} ({r['seconds']:.1f} s)",
                  flush=True)
    data = long_texts(out, args.ppl_tokens, args.ppl_texts)
    beacon_flags = BEACON_ON
    for name, model, window, max_seq, extra in () if args.cost_only else (
            ("plain (rolling 1024)", PLAIN, 1024, 0, []),
            ("YaRN x8 (whole text)", scaled["yarn"], args.ppl_tokens + 4096,
             args.ppl_tokens + 4096, []),
            ("beacon (trained)", BEACON, 0, 0, beacon_flags),
            ("beacon (initialisation)", init, 0, 0, beacon_flags)):
        r = perplexity(args.tessera, out, name.split(" ")[0] + name.split(" ")[1].strip("()"),
                       model, data, window, max_seq, extra)
        results["perplexity"][name] = r
        print(f"perplexity {name:26s}: {r['perplexity']:.3f} ({r['seconds']:.1f} s)", flush=True)
    kv_per_token = 2 * 8 * 2 * 32 * 4  # K and V, 8 layers, 2 KV heads, head_dim 32, F32
    fixed = ["--set", "method.beacon.ratios=256"]
    for tokens in (int(x) for x in args.bench_lengths.split(",")):
        b = shared.bench(args.tessera, out, "beacon", BEACON, tokens, fixed)
        c = b["method_counters"]
        memory, raw = c["beacon_memory_entries"], c["beacon_raw_entries"]
        row = {"beacon_prefill_s": tokens / b["prefill_tokens_per_s"],
               "beacon_us_per_token": 1e6 / b["prefill_tokens_per_s"],
               "beacon_entries": memory + raw,
               # the prompt and the one decoded token: floor(n / 256) beacons + n mod 256 raw
               "formula_entries": (tokens + 1) // 256 + (tokens + 1) % 256,
               "beacon_kv_bytes": (memory + raw) * kv_per_token,
               "beacon_peak_rss": b["peak_rss_bytes_rank0"],
               "plain_kv_bytes": tokens * kv_per_token}
        if tokens <= args.plain_max:
            p = shared.bench(args.tessera, out, "plain", scaled["dynamic"], tokens,
                             ["--max-seq-len", str(tokens + 8)])
            row["plain_prefill_s"] = tokens / p["prefill_tokens_per_s"]
            row["plain_peak_rss"] = p["peak_rss_bytes_rank0"]
        results["prefill"][tokens] = row
        print(f"prefill {tokens:6d}: {json.dumps(row)}", flush=True)
    for flags in (["--tp", "2"], ["--pp", "2"]):
        log = os.path.join(out, "bench", f"layout_{flags[0][2:]}.json")
        shared.run([args.mpiexec, "--oversubscribe", "--allow-run-as-root", "-np", "2",
                    args.tessera, "bench", "--model", BEACON, "--prompt-tokens",
                    str(args.layout_tokens), "--decode-tokens", "1"] + fixed + flags, log)
        text = open(log).read()
        b = json.loads(text[text.index("{"):])
        results["layouts"][" ".join(flags)] = {
            "prefill_s": args.layout_tokens / b["prefill_tokens_per_s"],
            "entries": b["method_counters"]["beacon_memory_entries"] +
                       b["method_counters"]["beacon_raw_entries"],
            "peak_rss_rank0": b["peak_rss_bytes_rank0"]}
        print(f"layout {' '.join(flags)}: {json.dumps(results['layouts'][' '.join(flags)])}",
              flush=True)
    json.dump(results, open(os.path.join(out, "results.json"), "w"), indent=1)
    plot(results, args.plot)


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    shared.plot_retrieval(a, results["retrieval"])
    rows = results["prefill"]
    xs = sorted(int(x) for x in rows)
    get = lambda x, k: (rows[x] if x in rows else rows[str(x)]).get(k)  # noqa: E731
    b.plot(xs, [get(x, "beacon_kv_bytes") / 2**20 for x in xs], "o-", label="beacon K/V (MiB)")
    b.plot(xs, [get(x, "plain_kv_bytes") / 2**20 for x in xs], "s--", label="plain K/V (MiB)")
    b.plot(xs, [get(x, "beacon_prefill_s") for x in xs], "o-", label="beacon prefill (s)")
    px = [x for x in xs if get(x, "plain_prefill_s") is not None]
    b.plot(px, [get(x, "plain_prefill_s") for x in px], "s--", label="plain prefill (s)")
    b.set_xscale("log", base=2)
    b.set_yscale("log")
    b.set_xlabel("input tokens")
    b.set_title("Prefill cost, ratio 256 (2-core CPU, one rank)")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
