"""lm-evaluation-harness drives `tessera serve`: lm_eval_test.py TESSERA_BINARY LM_EVAL_VENV [MPIEXEC]

lm-evaluation-harness itself (its local-completions client, from LM_EVAL_VENV, made by
scripts/install_lm_eval.sh) runs the three held-out code tasks of configs/lm_eval/ against the
server on the embedded model: multiple choice (loglikelihood), whole-file perplexity
(loglikelihood_rolling) and next-line generation (generate_until), at tp1 and, under MPIEXEC, at
tp2. Checked, each with its own assertion:
  - `tessera eval` on the same data (configs/tasks/code_*.textproto) against lm-evaluation-
    harness's own hf model (tests/fixtures/lm_eval/hf_tessera_code_tiny.json, recorded by
    tools/reference/lm_eval_tasks.py): acc / acc_norm / acc_bytes equal, every choice's
    log-likelihood within max(4e-5, 4e-7 |ll|) and its greediness equal; whole-file log-likelihoods within a
    relative 1e-6 and word_perplexity / byte_perplexity / bits_per_byte within a relative 1e-6;
    the generated lines equal;
  - lm-evaluation-harness through the server against `tessera eval`: the same, per layout;
  - `tessera eval`'s results file in lm-evaluation-harness's form (name, sample_len,
    "N/A" standard errors, higher_is_better without counts, group_subtasks, model_args).
"""
import glob
import json
import math
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tools", "reference"))
from serve_test import Server  # noqa: E402
import lm_eval_tasks  # noqa: E402

MC, PPL, GEN = lm_eval_tasks.TASKS
PRESETS = {MC: "configs/tasks/code_next_line.textproto",
           PPL: "configs/tasks/code_files_perplexity.textproto",
           GEN: "configs/tasks/code_next_line_generation.textproto"}
# Per choice: 4e-5 nats, or 4e-7 of the log-likelihood for the long choices (a sum of up to ~30
# float32 log-probabilities of up to ~130 nats in all).
LL_TOL, LL_REL_TOL = 4e-5, 4e-7
REL_TOL = 1e-6  # whole-file log-likelihoods and the perplexities, relative
failures = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what, flush=True)
    if not ok:
        failures.append(what)


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-30)


def tessera_eval(binary, tmp):
    """`tessera eval` on each preset at tp1: {"results": {task: metrics}, "samples": {task: ...},
    "raw": {task: results file}} in read_run()'s form."""
    out = {"results": {}, "samples": {}, "raw": {}}
    for task, preset in PRESETS.items():
        d = os.path.join(tmp, "eval_" + task)
        p = subprocess.run([binary, "eval", "--config", preset, "--threads", "2", "--set",
                            f"output.dir={d}"], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=900)
        if p.returncode != 0:
            raise RuntimeError(f"tessera eval {preset}: {p.stdout[-3000:]}")
        raw = json.load(open(glob.glob(os.path.join(d, "results_*.json"))[0]))
        name = next(iter(raw["results"]))
        res = raw["results"][name]
        out["raw"][task] = raw
        out["results"][task] = {m: res[m + ",none"] for m in lm_eval_tasks.METRICS[task]}
        rows = [json.loads(l) for l in open(glob.glob(os.path.join(d, "samples_*.jsonl"))[0])]
        rows.sort(key=lambda r: r["index"])
        if task == MC:
            out["samples"][task] = [[[ll, g] for ll, g in zip(r["loglikelihoods"], r["is_greedy"])]
                                    for r in rows]
        elif task == PPL:
            out["samples"][task] = [-r["nll"] for r in rows]
        else:
            out["samples"][task] = [r["text"] for r in rows]
    return out


def compare(got, want, label):
    """Checks `got` against `want` (both in read_run()'s form)."""
    for m in lm_eval_tasks.METRICS[MC]:
        check(got["results"][MC][m] == want["results"][MC][m],
              f"{label}: {MC} {m} {got['results'][MC][m]} == {want['results'][MC][m]}")
    g, w = got["samples"][MC], want["samples"][MC]
    pairs = [(a[0], b[0]) for qa, qb in zip(g, w) for a, b in zip(qa, qb)]
    diffs = [abs(a - b) for a, b in pairs]
    within = all(abs(a - b) <= max(LL_TOL, LL_REL_TOL * abs(b)) for a, b in pairs)
    check(len(g) == len(w) and all(len(a) == len(b) for a, b in zip(g, w)) and within,
          f"{label}: {MC} {len(diffs)} choice log-likelihoods, max |diff| {max(diffs):.2e}, max "
          f"relative {max(rel(a, b) for a, b in pairs):.2e} (within max({LL_TOL}, "
          f"{LL_REL_TOL} |ll|))")
    greedy_same = sum(a[1] == b[1] for qa, qb in zip(g, w) for a, b in zip(qa, qb))
    check(greedy_same == len(diffs), f"{label}: {MC} is_greedy equal ({greedy_same}/{len(diffs)})")
    g, w = got["samples"][PPL], want["samples"][PPL]
    worst = max(rel(a, b) for a, b in zip(g, w))
    check(len(g) == len(w) and worst <= REL_TOL,
          f"{label}: {PPL} {len(g)} whole-file log-likelihoods, max relative diff {worst:.2e}")
    for m in lm_eval_tasks.METRICS[PPL]:
        a, b = got["results"][PPL][m], want["results"][PPL][m]
        check(rel(a, b) <= REL_TOL, f"{label}: {PPL} {m} {a:.6f} vs {b:.6f}")
    g, w = got["samples"][GEN], want["samples"][GEN]
    same = sum(a == b for a, b in zip(g, w))
    check(len(g) == len(w) and same == len(w), f"{label}: {GEN} {same}/{len(w)} lines equal")
    check(got["results"][GEN]["exact_match"] == want["results"][GEN]["exact_match"],
          f"{label}: {GEN} exact_match equal")


def check_results_format(evaluated, lm_eval_run):
    """`tessera eval`'s results files next to lm-evaluation-harness's."""
    theirs = lm_eval_run["raw"]
    for task, raw in evaluated["raw"].items():
        name = next(iter(raw["results"]))
        res = raw["results"][name]
        check(res.get("name") == name and res.get("sample_len") == len(evaluated["samples"][task]),
              f"results {task}: name and sample_len")
        for m in lm_eval_tasks.METRICS[task]:
            want = theirs["results"][task].get(m + "_stderr,none")
            got = res.get(m + "_stderr,none")
            check((want == "N/A") == (got == "N/A") and got is not None,
                  f"results {task}: {m}_stderr ({got!r}; lm-evaluation-harness {want!r})")
        higher = raw["higher_is_better"][name]
        check("tokens" not in higher and "samples" not in higher and
              all(higher.get(m) == theirs["higher_is_better"][task][m]
                  for m in lm_eval_tasks.METRICS[task]),
              f"results {task}: higher_is_better as lm-evaluation-harness ({higher})")
        check(raw["group_subtasks"] == theirs["group_subtasks"],
              f"results {task}: group_subtasks {raw['group_subtasks']}")
        check(isinstance(raw["config"]["model_args"], dict), f"results {task}: model_args a dict")
        bos = raw["configs"][name].get("bos")
        check(task == PPL or bos == "lm_eval", f"results {task}: the BOS convention is named ({bos})")


def run_through_server(binary, venv, tmp, mpiexec, tp):
    server = Server(binary, mpiexec, tp=tp)
    label = f"lm_eval local-completions tp{tp}"
    try:
        out_dir = os.path.join(tmp, f"lm_eval_tp{tp}")
        code, log = lm_eval_tasks.run_lm_eval(
            os.path.join(venv, "bin", "lm_eval"), "local-completions",
            f"model=tessera-code-tiny,base_url=http://127.0.0.1:{server.port}/v1/completions,"
            "tokenizer_backend=remote,tokenized_requests=True,max_length=1025,num_concurrent=4,"
            "max_retries=1,timeout=300", out_dir, timeout=1500)
        check(code == 0, f"{label}: lm_eval exits 0")
        if code != 0:
            print(log[-4000:])
            return None
        return lm_eval_tasks.read_run(out_dir)
    finally:
        stopped = server.stop()
        check(stopped == 0, f"{label}: the server stops cleanly ({stopped})")


def main():
    binary, venv = sys.argv[1], sys.argv[2]
    mpiexec = sys.argv[3] if len(sys.argv) > 3 else None
    if not os.path.exists(os.path.join(venv, "bin", "lm_eval")):
        subprocess.run(["bash", os.path.join(ROOT, "scripts", "install_lm_eval.sh"), venv],
                       check=True)
    hf = json.load(open(lm_eval_tasks.FIXTURE))
    with tempfile.TemporaryDirectory() as tmp:
        evaluated = tessera_eval(binary, tmp)
        compare(evaluated, hf, "tessera eval vs lm-evaluation-harness hf")
        for tp in [1, 2] if mpiexec else [1]:
            run = run_through_server(binary, venv, tmp, mpiexec, tp)
            if run is None:
                continue
            compare(run, evaluated, f"lm_eval through serve tp{tp} vs tessera eval")
            if tp == 1:
                check_results_format(evaluated, run)
    for task in lm_eval_tasks.TASKS:
        print(f"{task}: tessera eval {json.dumps(evaluated['results'][task])}")
    print(f"{len(failures)} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
