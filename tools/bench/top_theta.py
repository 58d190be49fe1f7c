#!/usr/bin/env python3
"""Quality versus attention cost of Top-theta and Top-k on the embedded model, next to dense
attention in the same run (methods/top_theta/README.md).

For k in --ks and the four variants of the reference's reproduce grid (all with layers 0-1 at
k = 512; Top-theta calibrated with top-k at calibration and calib_add_sigma 0.1 on the training
split's files, configs/tasks/data/code_calibration.jsonl):
  theta_pre   Top-theta, pre-softmax, exact SDC, VMC
  theta_post  Top-theta, post-softmax, VMC
  topk_pre    Top-k, pre-softmax, exact SDC, VMC
  topk_post   Top-k, post-softmax, VMC
it runs `tessera eval` on held-out code (--first-layers-k 0: every layer at k, the cost of the
first two layers' override; --variants a,b: some of them only): rolling perplexity (code_files, 1023-token windows),
code_passkey (accuracy; its decode steps give the V rows read at decode) and the next-line
multiple choice (acc, acc_norm), and records the kept fraction of attention elements at prefill
and of V rows at decode. It also calibrates on another task's prompts (code_passkey) and applies
those thresholds to perplexity and the multiple choice (whether thresholds transfer).

  python3 tools/bench/top_theta.py [--bin build/launcher/tessera] [--ks 16,32,64,128]
                                   [--out results/bench/top_theta.json]
then tools/bench/plot_top_theta.py draws methods/top_theta/quality_vs_cost.png.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TASKS = {
    "perplexity": "configs/tasks/code_files_perplexity.textproto",
    "passkey": "configs/tasks/code_passkey.textproto",
    "next_line": "configs/tasks/code_next_line.textproto",
}
VARIANTS = {
    "theta_pre": ("TOP_THETA", "PRE_SOFTMAX", "SDC_EXACT"),
    "theta_post": ("TOP_THETA", "POST_SOFTMAX", "SDC_NONE"),
    "topk_pre": ("TOP_K", "PRE_SOFTMAX", "SDC_EXACT"),
    "topk_post": ("TOP_K", "POST_SOFTMAX", "SDC_NONE"),
}


FIRST_LAYERS_K = 512  # --first-layers-k


def method_file(work, kind, placement, sdc, k, calibration_dir, vmc=True):
    lines = ["sparse_attention {", f"  kind: {kind}", f"  k: {k}"]
    if FIRST_LAYERS_K > 0:
        lines += [f"  layer_k {{ layer: 0 k: {FIRST_LAYERS_K} }}",
                  f"  layer_k {{ layer: 1 k: {FIRST_LAYERS_K} }}"]
    lines += [f"  placement: {placement}", f"  sdc: {sdc}", f"  vmc: {'true' if vmc else 'false'}"]
    if kind == "TOP_THETA":
        lines.append(f'  calibration_dir: "{calibration_dir}"')
    lines.append("}")
    path = os.path.join(work, f"{kind}_{placement}_{sdc}_{k}_{vmc}.textproto")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def run(cmd):
    started = time.time()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return time.time() - started


def evaluate(binary, work, task, method):
    out = tempfile.mkdtemp(dir=work)
    cmd = [binary, "eval", "--config", TASKS[task], "--output-dir", out]
    if method:
        cmd += ["--method", method]
    seconds = run(cmd)
    results = json.load(open(sorted(glob.glob(os.path.join(out, "results_*.json")))[-1]))
    metrics = next(iter(results["results"].values()))
    counters = results["compute"].get("method", {}).get("sparse_attention", {})
    return {"metrics": {k.split(",")[0]: v for k, v in metrics.items() if isinstance(v, float)},
            "counters": counters, "seconds": seconds}


def summarize(runs):
    ppl, passkey, mc = runs["perplexity"], runs["passkey"], runs["next_line"]
    def fraction(run, name):
        c = run["counters"].get(name)
        return c["fraction"] if c else 1.0
    return {
        "perplexity": ppl["metrics"]["perplexity"],
        "bits_per_byte": ppl["metrics"]["bits_per_byte"],
        "passkey_acc": passkey["metrics"].get("acc", passkey["metrics"].get("exact_match")),
        "next_line_acc": mc["metrics"]["acc"],
        "next_line_acc_norm": mc["metrics"]["acc_norm"],
        "prefill_elements": fraction(ppl, "elements_prefill"),
        "prefill_vrows": fraction(ppl, "vrows_prefill"),
        "decode_vrows": fraction(passkey, "vrows_decode"),
        "decode_elements": fraction(passkey, "elements_decode"),
        "seconds": sum(r["seconds"] for r in runs.values()),
    }


def calibrate(binary, work, placement, k, data, name):
    out = os.path.join(work, f"cal_{name}_{placement}_{k}")
    method = method_file(work, "TOP_THETA", placement, "SDC_NONE", k, out, vmc=False)
    run([binary, "calibrate", "--model", "models/tessera-code-tiny", "--method", method,
         "--data", data, "--calib-tac", "--calib-add-sigma", "0.1", "--output-dir", out])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(REPO, "build", "launcher", "tessera"))
    ap.add_argument("--ks", default="16,32,64,128")
    ap.add_argument("--out", default=os.path.join(REPO, "results", "bench", "top_theta.json"))
    ap.add_argument("--first-layers-k", type=int, default=512,
                    help="k of layers 0 and 1 (the grid's 512); 0: the same k as every layer")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--no-transfer", action="store_true")
    args = ap.parse_args()
    global FIRST_LAYERS_K
    FIRST_LAYERS_K = args.first_layers_k
    ks = [int(k) for k in args.ks.split(",")]
    work = tempfile.mkdtemp(prefix="top_theta_bench_")
    report = {"command": " ".join(sys.argv), "ks": ks, "first_layers_k": FIRST_LAYERS_K,
              "rows": []}
    variants = {v: VARIANTS[v] for v in args.variants.split(",")}
    dense = {t: evaluate(args.bin, work, t, None) for t in TASKS}
    report["dense"] = summarize(dense)
    print("dense", json.dumps(report["dense"]), flush=True)
    for k in ks:
        placements = {placement for kind, placement, _ in variants.values() if kind == "TOP_THETA"}
        cal = {p: calibrate(args.bin, work, p, k, "configs/tasks/data/code_calibration.jsonl",
                            "files") for p in placements}
        for name, (kind, placement, sdc) in variants.items():
            method = method_file(work, kind, placement, sdc, k, cal.get(placement))
            row = {"variant": name, "k": k}
            row.update(summarize({t: evaluate(args.bin, work, t, method) for t in TASKS}))
            report["rows"].append(row)
            print(json.dumps(row), flush=True)
    # Transfer: thresholds from the passkey prompts, applied to perplexity and the multiple
    # choice, against those from the code files.
    report["transfer"] = []
    for k in [] if args.no_transfer else [k for k in ks if k in (32, 64)] or ks[:1]:
        for source, data in (("code_files", "configs/tasks/data/code_calibration.jsonl"),
                             ("passkey_prompts", "configs/tasks/data/code_passkey.jsonl")):
            cal = calibrate(args.bin, work, "PRE_SOFTMAX", k, data, source)
            method = method_file(work, "TOP_THETA", "PRE_SOFTMAX", "SDC_EXACT", k, cal)
            ppl = evaluate(args.bin, work, "perplexity", method)
            mc = evaluate(args.bin, work, "next_line", method)
            row = {"k": k, "calibrated_on": source,
                   "perplexity": ppl["metrics"]["perplexity"],
                   "prefill_elements": ppl["counters"]["elements_prefill"]["fraction"],
                   "next_line_acc_norm": mc["metrics"]["acc_norm"],
                   "next_line_elements": mc["counters"]["elements_prefill"]["fraction"]}
            report["transfer"].append(row)
            print(json.dumps(row), flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
