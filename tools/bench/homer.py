#!/usr/bin/env python3
"""HOMER on the embedded model (trained on 1024 tokens): key retrieval in code past the window,
and prefill memory and time against the context length.

1. Key retrieval: samples of 1024, 2048, 4096 and 8192 tokens at five depths (make_code_passkey's
   format, filler from the held-out code files of configs/tasks/data/code_files.jsonl), scored
   by `tessera eval` (greedy; the first number of the continuation must be the key) for: the
   plain model (1024 only: it was not trained further), linear / dynamic (NTK) / YaRN rope
   scaling by 8 (config.json variants run past the window with --max-seq-len), HOMER
   (C = T = 512, W = 2, prefix and suffix 32 tokens, a bias table calibrated by
   `tessera calibrate` on configs/tasks/data/code_calibration.jsonl) and HOMER + YaRN x2
   (C = T = 1024, its own table).
2. Prefill cost: `tessera bench` with a prompt of 1k..64k random tokens, HOMER (C = T = 1000,
   W = 0: 64k needs 8 levels, every layer of the model) against plain
   prefill (dynamic scaling so that it may run past the window; plain up to --plain-max):
   prefill time, and the K/V each holds at its peak (HOMER's merge tree: homer_tree_kv_bytes;
   plain: every token of every layer).

    python3 tools/bench/homer.py --tessera build/launcher/tessera --out build/bench/homer
writes OUT/results.json and methods/homer/quality_vs_cost.png.
"""
import argparse
import glob
import json
import os
import random
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tools", "train"))
from make_code_passkey import sample  # noqa: E402

MODEL = os.path.join(REPO, "models", "tessera-code-tiny")
REUSE = False  # --reuse: keep the retrieval cells an earlier run finished
# Retrieval: half the window per chunk (the spec's rule), the query line and the code before it
# as the suffix.
HOMER = {"max_chunk_len": 512, "target_len": 512, "layers_warmup": 2, "prefix_len": 32,
         "suffix_len": 32}
HOMER_YARN = dict(HOMER, max_chunk_len=1024, target_len=1024)
# Prefill cost to 64k: 128 chunks need 8 levels, all 8 layers of the model (W = 0); chunks just
# inside the 1024-token window so that the decode step's position is too.
HOMER_LONG = {"max_chunk_len": 1000, "target_len": 1000, "layers_warmup": 0, "prefix_len": 32,
              "suffix_len": 32}
SCALINGS = {
    "linear": {"rope_type": "linear", "factor": 8.0},
    "dynamic": {"rope_type": "dynamic", "factor": 8.0},
    "yarn": {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 1024},
    "yarn2": {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 1024},
}


def run(cmd, log):
    with open(log, "w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{open(log).read()[-3000:]}")


def variant(out, name):
    """The embedded model with config.json's rope_scaling set (weights linked, not copied)."""
    d = os.path.join(out, "models", name)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(MODEL):
        if f != "config.json" and not os.path.exists(os.path.join(d, f)):
            os.symlink(os.path.join(MODEL, f), os.path.join(d, f))
    config = json.load(open(os.path.join(MODEL, "config.json")))
    config["rope_scaling"] = SCALINGS[name]
    json.dump(config, open(os.path.join(d, "config.json"), "w"), indent=1)
    return d


def make_data(out, lengths, per_cell, seed):
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=os.path.join(MODEL, "tokenizer.model"))
    docs = [json.loads(l)["text"] for l in open(os.path.join(REPO, "configs/tasks/data/code_files.jsonl"))]
    docs = [d for d in docs if d.count("\n") > 20]
    rng = random.Random(seed)
    files = {}
    for length in lengths:
        path = os.path.join(out, f"passkey_{length}.jsonl")
        with open(path, "w") as f:
            for depth in (0.0, 0.25, 0.5, 0.75, 1.0):
                for _ in range(per_cell):
                    f.write(json.dumps(sample(sp, docs, rng, length, depth)) + "\n")
        files[length] = path
    return files


def homer_flags(settings, bias):
    flags = []
    for k, v in dict(settings, bias_path=bias).items():
        flags += ["--set", f"method.homer.{k}={v}"]
    return flags


def passkey(tessera, out, name, model, data, length, extra, max_seq):
    d = os.path.join(out, "eval", f"{name}_{length}")
    if REUSE and glob.glob(os.path.join(d, "results_*.json")):  # a finished cell of an earlier run
        (path,) = glob.glob(os.path.join(d, "results_*.json"))
        r = json.load(open(path))
        return {"acc": r["results"]["code_passkey"]["acc,none"],
                "seconds": float(r["total_evaluation_time_seconds"])}
    shutil.rmtree(d, ignore_errors=True)
    config = os.path.join(out, "eval", f"{name}_{length}.textproto")
    os.makedirs(os.path.dirname(config), exist_ok=True)
    with open(config, "w") as f:
        seq = f" max_seq_len: {max_seq}" if max_seq else ""
        f.write(f'model {{ path: "{model}"{seq} }}\nseed: 1234\n'
                f'task {{ name: "code_passkey" passkey {{ data: "{data}" key_digits: 5 }} }}\n'
                f'output {{ dir: "{d}" }}\n')
    run([tessera, "eval", "--config", config] + extra, d + ".log")
    (path,) = glob.glob(os.path.join(d, "results_*.json"))
    r = json.load(open(path))
    return {"acc": r["results"]["code_passkey"]["acc,none"],
            "seconds": float(r["total_evaluation_time_seconds"])}


def bench(tessera, out, name, model, tokens, extra):
    log = os.path.join(out, "bench", f"{name}_{tokens}.json")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    run([tessera, "bench", "--model", model, "--prompt-tokens", str(tokens), "--decode-tokens", "1"]
        + extra, log)
    text = open(log).read()
    return json.loads(text[text.index("{"):])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tessera", default=os.path.join(REPO, "build/launcher/tessera"))
    ap.add_argument("--out", default=os.path.join(REPO, "build/bench/homer"))
    ap.add_argument("--lengths", default="1024,2048,4096,8192")
    ap.add_argument("--per-cell", type=int, default=4)
    ap.add_argument("--bench-lengths", default="1024,2048,4096,8192,16384,32768,65536")
    ap.add_argument("--plain-max", type=int, default=16384)
    ap.add_argument("--plot", default=os.path.join(REPO, "methods/homer/quality_vs_cost.png"))
    ap.add_argument("--reuse", action="store_true",
                    help="keep the retrieval cells an earlier run into --out finished")
    args = ap.parse_args()
    global REUSE
    REUSE = args.reuse
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    lengths = [int(x) for x in args.lengths.split(",")]
    files = make_data(out, lengths, args.per_cell, 4242)
    models = {name: variant(out, name) for name in SCALINGS}
    bias = os.path.join(out, "bias.safetensors")
    bias_yarn = os.path.join(out, "bias_yarn2.safetensors")
    calib = ["--data", "configs/tasks/data/code_calibration.jsonl"]
    run([args.tessera, "calibrate", "--model", MODEL] + calib + homer_flags(HOMER, bias),
        os.path.join(out, "calibrate.log"))
    run([args.tessera, "calibrate", "--model", models["yarn2"]] + calib +
        homer_flags(HOMER_YARN, bias_yarn), os.path.join(out, "calibrate_yarn2.log"))
    bias_long = os.path.join(out, "bias_1000.safetensors")
    run([args.tessera, "calibrate", "--model", MODEL] + calib + homer_flags(HOMER_LONG, bias_long),
        os.path.join(out, "calibrate_1000.log"))
    longest = max(lengths) + 64
    methods = {  # model, flags, lengths, max_seq_len
        "plain": (MODEL, [], [1024], 0),
        "linear x8": (models["linear"], [], lengths, longest),
        "dynamic x8": (models["dynamic"], [], lengths, longest),
        "YaRN x8": (models["yarn"], [], lengths, longest),
        "HOMER": (MODEL, homer_flags(HOMER, bias), lengths, 0),
        "HOMER + YaRN x2": (models["yarn2"], homer_flags(HOMER_YARN, bias_yarn), lengths, 2048),
    }
    results = {"retrieval": {}, "prefill": {}}
    for name, (model, extra, ls, max_seq) in methods.items():
        for length in ls:
            r = passkey(args.tessera, out, name.replace(" ", "_").replace("+", ""), model,
                        files[length], length, extra, max_seq)
            results["retrieval"].setdefault(name, {})[length] = r
            print(f"{name:16s} {length:5d}: retrieval {r['acc']:.3f} ({r['seconds']:.1f} s)",
                  flush=True)
    kv_per_token = 2 * 8 * 2 * 32 * 4  # K and V, 8 layers, 2 KV heads, head_dim 32, F32
    for tokens in (int(x) for x in args.bench_lengths.split(",")):
        h = bench(args.tessera, out, "homer", MODEL, tokens, homer_flags(HOMER_LONG, bias_long))
        row = {"homer_prefill_s": tokens / h["prefill_tokens_per_s"],
               "homer_tree_kv_bytes": h["method_counters"]["homer_tree_kv_bytes"],
               "homer_chunks": h["method_counters"]["homer_chunks"],
               "plain_kv_bytes": tokens * kv_per_token}
        if tokens <= args.plain_max:
            p = bench(args.tessera, out, "plain", models["dynamic"], tokens,
                      ["--max-seq-len", str(tokens + 8)])
            row["plain_prefill_s"] = tokens / p["prefill_tokens_per_s"]
        results["prefill"][tokens] = row
        print(f"prefill {tokens:6d}: {json.dumps(row)}", flush=True)
    json.dump(results, open(os.path.join(out, "results.json"), "w"), indent=1)
    plot(results, args.plot)


def plot_retrieval(a, retrieval):
    """Accuracy against the context length, one line per method ({name: {length: {"acc"}}})."""
    for name, cells in retrieval.items():
        xs = sorted(int(x) for x in cells)
        a.plot(xs, [cells[x]["acc"] if x in cells else cells[str(x)]["acc"] for x in xs],
               marker="o", label=name)
    a.set_xscale("log", base=2)
    a.axvline(1024, color="gray", linestyle=":", linewidth=1)
    a.set_xlabel("context tokens (trained on 1024)")
    a.set_ylabel("key retrieval accuracy")
    a.set_title("Key retrieval in code, embedded model")
    a.legend(fontsize=8)


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    plot_retrieval(a, results["retrieval"])
    rows = results["prefill"]
    xs = sorted(int(x) for x in rows)
    get = lambda x, k: (rows[x] if x in rows else rows[str(x)]).get(k)  # noqa: E731
    b.plot(xs, [get(x, "homer_tree_kv_bytes") / 2**20 for x in xs], "o-", label="HOMER peak K/V (MiB)")
    b.plot(xs, [get(x, "plain_kv_bytes") / 2**20 for x in xs], "s--", label="plain K/V (MiB)")
    b.plot(xs, [get(x, "homer_prefill_s") for x in xs], "o-", label="HOMER prefill (s)")
    px = [x for x in xs if get(x, "plain_prefill_s") is not None]
    b.plot(px, [get(x, "plain_prefill_s") for x in px], "s--", label="plain prefill (s)")
    b.set_xscale("log", base=2)
    b.set_yscale("log")
    b.set_xlabel("prompt tokens")
    b.set_title("Prefill cost (2-core CPU, one rank)")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
