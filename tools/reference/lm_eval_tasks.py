#!/usr/bin/env python3
"""lm-evaluation-harness on the held-out code tasks (configs/lm_eval/), and what it found.

Two uses:
  - record: runs lm-evaluation-harness's own `hf` model (transformers, float32) on the embedded
    model and writes tests/fixtures/lm_eval/hf_tessera_code_tiny.json, the reference that
    tests/launcher/serve/lm_eval_test.py compares the server and `tessera eval` against:
        pip install "lm_eval[api]==0.4.13" torch transformers==5.23.0 accelerate sentencepiece
        python3 tools/reference/lm_eval_tasks.py record
  - imported by the test: run_lm_eval() and read_run(), the same reading of lm-evaluation-
    harness's results and samples files for every model.

The windows: hf max_length 1023 and local-completions max_length 1025 both give rolling windows
of 1023 tokens (local-completions keeps one position for the generated token and one more for
its own context token), the window of configs/tasks/code_files_perplexity.textproto.
"""
import glob
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = "models/tessera-code-tiny"
TASKS = ["tessera_code_next_line", "tessera_code_files", "tessera_code_next_line_gen"]
FIXTURE = os.path.join(REPO, "tests", "fixtures", "lm_eval", "hf_tessera_code_tiny.json")
# The metrics each task reports, as lm-evaluation-harness names them.
METRICS = {
    "tessera_code_next_line": ["acc", "acc_norm", "acc_bytes"],
    "tessera_code_files": ["word_perplexity", "byte_perplexity", "bits_per_byte"],
    "tessera_code_next_line_gen": ["exact_match"],
}


def run_lm_eval(lm_eval, model, model_args, out_dir, env=None, timeout=1200):
    """Runs `lm_eval` (a path to its console script) on TASKS from the repository root; returns
    (exit code, combined output)."""
    cmd = [lm_eval, "--model", model, "--model_args", model_args, "--tasks", ",".join(TASKS),
           "--include_path", os.path.join(REPO, "configs", "lm_eval"), "--output_path", out_dir,
           "--log_samples", "--seed", "1234"]
    full_env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1",
                    TOKENIZERS_PARALLELISM="false", **(env or {}))
    p = subprocess.run(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=timeout)
    return p.returncode, p.stdout


def read_run(out_dir):
    """The metrics and per-sample responses of one lm-evaluation-harness run:
    {"results": {task: {metric: value}}, "samples": {task: [...]}, "raw": results file}.
    Per sample: multiple choice [[loglikelihood, is_greedy] per choice], rolling the text's
    log-likelihood, generation the response text; in doc_id order."""
    results_files = sorted(glob.glob(os.path.join(out_dir, "**", "results_*.json"), recursive=True))
    if not results_files:
        raise RuntimeError(f"no results_*.json under {out_dir}")
    raw = json.load(open(results_files[-1]))
    out = {"results": {}, "samples": {}, "raw": raw}
    for task in TASKS:
        res = raw["results"][task]
        out["results"][task] = {m: res[m + ",none"] for m in METRICS[task]}
        for m in METRICS[task]:
            out["results"][task][m + "_stderr"] = res.get(m + "_stderr,none")
        files = glob.glob(os.path.join(out_dir, "**", f"samples_{task}_[0-9]*.jsonl"), recursive=True)
        rows = [json.loads(line) for line in open(sorted(files)[-1])]
        rows.sort(key=lambda r: r["doc_id"])
        # The samples file writes numbers and booleans as strings ("-1.42", "False").
        if task == "tessera_code_next_line":
            samples = [[[float(ll), str(g) == "True"] for ll, g in r["filtered_resps"]]
                       for r in rows]
        elif task == "tessera_code_files":
            samples = [float(r["filtered_resps"][0]) for r in rows]
        else:
            samples = [r["filtered_resps"][0] for r in rows]
        out["samples"][task] = samples
    return out


def record():
    import lm_eval
    import torch
    import transformers
    lm_eval_bin = os.path.join(os.path.dirname(sys.executable), "lm_eval")
    with tempfile.TemporaryDirectory() as tmp:
        code, log = run_lm_eval(
            lm_eval_bin, "hf",
            f"pretrained={os.path.join(REPO, MODEL)},dtype=float32,max_length=1023,"
            "attn_implementation=eager", tmp, env={"CUDA_VISIBLE_DEVICES": ""}, timeout=7200)
        if code != 0:
            sys.exit(log)
        run = read_run(tmp)
    fixture = {
        "tool": "tools/reference/lm_eval_tasks.py record",
        "model": MODEL,
        "lm_eval_model": "hf",
        "model_args": {"dtype": "float32", "max_length": 1023, "attn_implementation": "eager"},
        "versions": {"lm_eval": lm_eval.__version__ if hasattr(lm_eval, "__version__") else
                     "0.4.13", "torch": torch.__version__, "transformers": transformers.__version__},
        "results": run["results"],
        "samples": run["samples"],
    }
    os.makedirs(os.path.dirname(FIXTURE), exist_ok=True)
    with open(FIXTURE, "w") as f:
        json.dump(fixture, f, indent=1)
        f.write("\n")
    print(json.dumps(run["results"], indent=1))


if __name__ == "__main__":
    if sys.argv[1:] != ["record"]:
        sys.exit(__doc__)
    record()
