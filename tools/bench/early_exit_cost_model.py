#!/usr/bin/env python3
"""Early-exit cost model: measured FREE decode speedups against shared/specs/early_exit.md §6.7.

The model of §6.7 (batch 1, memory-bound; `t_l` one layer, `t_h` the LM head, exit after K of L
blocks, exit rate r, kappa = 1):

    T_full    = L*t_l + t_h
    T_static  = K*t_l + t_h                                   (STATIC: every token leaves after K)
    T_FREE(r) = K*t_l + t_h + (1 - r)*((L - K)*t_l + t_h)     (shallow pass with its exit head for
                                                               every token; deep pass with the
                                                               final head for the tokens that go
                                                               deep)

For each layout (tp1, tp2, pp2) the script measures decode ms/token of the plain model (T_full),
of STATIC at K (T_static) and of FREE with forced decisions at r in {0, 0.6, 0.8}
(`method.early_exit.forced_exit_rate`: each check exits with probability r, decided by a hash of
the check's index, the same on every rank: the tokens do not matter, so random weights serve).
From the same run's T_full and T_static it derives

    t_l = (T_full - T_static) / (L - K),   t_h = T_full - L*t_l

and compares the measured speedup T_full / T_FREE(r) with the predicted T_full / T_pred(r).

Forced decisions are a fixed sequence, not a sample. Check number i exits when
splitmix64(i) / 2^64 < r (ForcedDraw in methods/early_exit/free_runner.cc, replicated here), and
the checks are counted over the runner's life: `tessera bench` first runs a warm-up generation
with one decode step (check 0), then the timed one (checks 1..N for N = --decode-tokens). The
realized exit rate r_hat of checks 1..N is therefore known exactly, and differs from r by the
luck of a short sequence: the first 22 checks all fall below 0.73, so N = 32 gives r_hat = 0.5625
and 0.906 for r = 0.6 and 0.8, and the default N = 40 gives 0.55 and 0.85. The table gives the
prediction at the nominal r and at r_hat; the latter is what the formula says about the decisions
the run actually took.

What the formula leaves out, and the columns that show it:
  * kappa(m) = 1. A token that goes deep takes the pending exited tokens with it: a chunk of
    m = (exits since the last deep pass) + 1 rows through the L - K deep layers. On a
    memory-bound CPU GEMM a few rows cost about one row, but the hash above puts 22 exits in a
    row at the start, so r = 0.8 has one chunk of 23 rows. `kappa_impl` is the mean kappa over
    the run's deep passes that the measured time implies,
        kappa_impl = (N*(T_FREE - T_static) - n_deep*t_h) / (n_deep*(L - K)*t_l),
    (1 when the formula holds; at r = 0 every chunk is one row). kappa(m) itself is measured on
    the plain model: a prompt pass over m rows (`chunk@m`: --prompt-tokens m, one decode step)
    against one over 1 row, kappa(m) = 1 + (P(m) - P(1)) / (L*t_l), for m = 1, 4, 8 and the
    largest deep chunk of the run. `pred(chunks)` is the prediction over the run's realized deep
    chunks with that kappa (linear between the measured m).
  * Per-step fixed costs (sampling, step set-up, the token broadcast, thread barriers) land in
    the derived t_h, which the formula then charges twice for a token that goes deep. The table
    prints t_h/t_l next to the ratio of head to layer weight bytes: the excess, times t_l, is that
    fixed cost.
  * Trailing exits: exited tokens still pending when the sequence ends are dropped (flush_at_end
    is off), so they never pay a deep pass; kappa = 1 already makes them free.
  * tp2: two all-reduces per layer and a gather of the vocabulary-parallel logits per head; the
    exit check adds one small all-gather of the vocabulary-parallel statistics (STATIC computes
    them too, so T_static includes it).
  * pp2 (balanced, L/2 layers per stage): with K <= L/2 the exit is on stage 0 (s* = 0). A token
    that exits is produced on stage 0 and only its words (token, decision) go to stage 1; it saves
    S - 1 - s* = 1 activation hop (stage 0 -> 1) and the whole of stage 1. A token that goes deep
    pays the shallow pass on stage 0, the deep chunk's layers K..L/2-1 on stage 0, the hop, stage
    1's layers and the final head there. T_full includes the hop and T_static does not, so the
    derived t_l carries the hop spread over L - K layers and the formula charges it once per deep
    pass, as it should; stage 0 also holds a copy of the LM head for the exit.

Timing. Each configuration is one `tessera bench` process (--prompt-tokens, --decode-tokens,
--threads per rank; tp2 and pp2 under `mpirun -np 2`); its decode_ms_per_token is the wall time
of the N decode steps over N. The machine is shared (2 cores, with builds and other benchmarks),
so within a repeat each layout's configurations run back to back, and the layouts and the
configurations within them rotate from repeat to repeat (reversed on odd repeats). Each repeat
derives its own t_l and t_h, predictions and speedups from its own runs (adjacent in time, so a
change of load between repeats cancels in the ratios); the table gives the medians over repeats
and the range of the per-repeat measured speedups. One thread per rank keeps the 2-rank layouts
at one rank per core.

Command (from the repository root; about 9 minutes on 2 idle cores and up to twice that when
they are busy, after a checkpoint of about 1.3 GB is written once to --model if it is missing):

  python3 tools/bench/early_exit_cost_model.py
  python3 tools/bench/early_exit_cost_model.py --repeats 1 --layouts tp1 \\
      --out /tmp/early_exit_cost_model_quick.json        # smoke test, about 1 minute

Needs only the Python standard library (the checkpoint tool needs numpy), build/launcher/tessera
and, for tp2 and pp2, Open MPI's mpirun.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_BINARY = os.path.join(REPO, "build", "launcher", "tessera")
DEFAULT_MODEL = "/tmp/tessera-bench/llama-1b-l12"
DEFAULT_OUT = os.path.join(REPO, "results", "bench", "early_exit_cost_model.json")
CHECKPOINT_TOOL = os.path.join(REPO, "tools", "make_random_checkpoint.py")
MPIRUN = ["mpirun", "--oversubscribe", "--allow-run-as-root", "-np", "2"]

# The random checkpoint: the 1B-class shape of tools/make_random_checkpoint.py with --layers.
SHAPE = {"hidden": 2048, "intermediate": 5632, "heads": 32, "kv_heads": 4, "vocab": 32000}

LAYOUTS = {"tp1": [], "tp2": ["--tp", "2"], "pp2": ["--pp", "2"]}

# Checks the bench's warm-up generation takes before the timed one (4 prompt tokens, 2 new
# tokens: one decode step).
WARMUP_CHECKS = 1

_MASK64 = (1 << 64) - 1


def forced_draw(index):
    """ForcedDraw of methods/early_exit/free_runner.cc: splitmix64 of the check index, in [0, 1)."""
    z = (index + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    z ^= z >> 31
    return (z >> 11) * 2.0 ** -53


def forced_decisions(rate, first, count):
    """Decisions of checks first..first+count-1: True exits."""
    return [forced_draw(i) < rate for i in range(first, first + count)]


def deep_chunks(decisions):
    """Rows of each deep pass (pending exits + 1), in order, and the exits pending at the end."""
    chunks, pending = [], 0
    for exits in decisions:
        if exits:
            pending += 1
        else:
            chunks.append(pending + 1)
            pending = 0
    return chunks, pending


def ensure_checkpoint(model_dir, layers):
    """Writes the random checkpoint unless `model_dir` holds one; returns its config.json."""
    config = os.path.join(model_dir, "config.json")
    weights = os.path.join(model_dir, "model.safetensors")
    if not (os.path.exists(config) and os.path.exists(weights)):
        print(f"writing the random checkpoint to {model_dir} ...", flush=True)
        subprocess.run([sys.executable, CHECKPOINT_TOOL, "--out", model_dir,
                        "--hidden", str(SHAPE["hidden"]),
                        "--intermediate", str(SHAPE["intermediate"]), "--layers", str(layers),
                        "--heads", str(SHAPE["heads"]), "--kv-heads", str(SHAPE["kv_heads"]),
                        "--vocab", str(SHAPE["vocab"]), "--dtype", "bf16"], check=True)
    with open(config) as f:
        return json.load(f)


def chunk_rows(args):
    """Row counts m whose kappa(m) is measured: 1, 4, 8 and the largest deep chunk of the run."""
    largest = max(max(deep_chunks(forced_decisions(r, WARMUP_CHECKS, args.decode_tokens))[0],
                      default=1) for r in args.rates)
    return sorted({1, largest} | {m for m in (4, 8) if m < largest})


def configurations(args):
    """(name, --set flags, prompt tokens, decode tokens) of every configuration of one layout.

    `chunk@m` is the plain model's prompt pass over m rows (one decode step after it): with the
    1-row pass it gives kappa(m), the cost of m rows through a layer over one row's.
    """
    n, prompt, k = args.decode_tokens, args.prompt_tokens, args.exit_layer
    configs = [("plain", [], prompt, n),
               ("static", ["method.early_exit.policy=STATIC", f"method.early_exit.exit_layer={k}"],
                prompt, n)]
    for r in args.rates:
        configs.append((f"free@{r:g}", [f"method.early_exit.exit_layer={k}",
                                        f"method.early_exit.forced_exit_rate={r:g}"], prompt, n))
    for m in chunk_rows(args):
        configs.append((f"chunk@{m}", [], m, 1))
    return configs


def run_bench(args, layout, sets, prompt_tokens, decode_tokens):
    cmd = [args.binary, "bench", "--model", args.model, "--prompt-tokens", str(prompt_tokens),
           "--decode-tokens", str(decode_tokens), "--threads", str(args.threads)]
    cmd += LAYOUTS[layout]
    for s in sets:
        cmd += ["--set", s]
    if LAYOUTS[layout]:
        cmd = MPIRUN + cmd
    for attempt in range(args.attempts):
        wait_for_binary(args.binary)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        if proc.returncode == 0:
            out = proc.stdout
            result = json.loads(out[out.index("{"):out.rindex("}") + 1])
            result["binary_mtime"] = os.path.getmtime(args.binary)
            return result
        last = (proc.stderr.strip().splitlines() or [""])[-1]
        print(f"  attempt {attempt + 1} failed ({proc.returncode}): {last}", flush=True)
    raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")


def wait_for_binary(binary, settle_s=20, limit_s=900):
    """Waits until `binary` exists and has not changed for settle_s (a rebuild may replace it)."""
    deadline = time.time() + limit_s
    while time.time() < deadline:
        if os.path.exists(binary) and time.time() - os.path.getmtime(binary) > settle_s:
            return
        time.sleep(5)
    sys.exit(f"{binary} is missing or still changing after {limit_s} s")


def weight_ratio(config):
    """Head weight bytes / one layer's weight bytes (the same for every dtype and tp)."""
    h, i = config["hidden_size"], config["intermediate_size"]
    head_dim = config.get("head_dim") or h // config["num_attention_heads"]
    q = config["num_attention_heads"] * head_dim
    kv = config["num_key_value_heads"] * head_dim
    return config["vocab_size"] * h / (h * (q + 2 * kv) + q * h + 3 * h * i)


def interpolate(points, m):
    """Piecewise-linear through the sorted (m, kappa) points, extended linearly past the last."""
    for (m0, k0), (m1, k1) in zip(points, points[1:]):
        if m <= m1 or (m1, k1) == points[-1]:
            return k0 + (k1 - k0) * (m - m0) / (m1 - m0)
    return points[0][1]


def cost_model(args, times, prompt_ms):
    """§6.7 for one repeat of one layout: constants, predictions and measured speedups.

    `times` maps each configuration to its decode ms/token and `prompt_ms` each chunk@m to its
    prompt pass (ms).
    """
    L, K, N = args.layers, args.exit_layer, args.decode_tokens
    t_full, t_static = times["plain"], times["static"]
    t_l = (t_full - t_static) / (L - K)
    t_h = t_full - L * t_l
    # A prompt pass of m rows: L layers over m rows, the head over the last one; kappa(m) is its
    # excess over the 1-row pass, per layer, in units of t_l, plus one.
    kappas = {m: 1 + (prompt_ms[m] - prompt_ms[1]) / (L * t_l) for m in sorted(prompt_ms)}
    points = sorted(kappas.items())

    def predicted(rate):
        return K * t_l + t_h + (1 - rate) * ((L - K) * t_l + t_h)

    out = {"T_full_ms": t_full, "T_static_ms": t_static, "static_speedup": t_full / t_static,
           "t_l_ms": t_l, "t_h_ms": t_h, "t_h_over_t_l": t_h / t_l,
           "fixed_ms_per_step_estimate": t_h - args.weight_ratio * t_l,
           "prompt_pass_ms": prompt_ms, "kappa": kappas, "free": []}
    for r in args.rates:
        decisions = forced_decisions(r, WARMUP_CHECKS, N)
        chunks, _ = deep_chunks(decisions)
        measured = times[f"free@{r:g}"]
        pred_chunks = t_static + sum((L - K) * t_l * interpolate(points, m) + t_h
                                     for m in chunks) / N
        out["free"].append({
            "ms_per_token": measured,
            "speedup": t_full / measured,
            "predicted_speedup": t_full / predicted(r),
            "predicted_speedup_realized": t_full / predicted(sum(decisions) / N),
            "predicted_speedup_chunks": t_full / pred_chunks,
            "kappa_implied": ((N * (measured - t_static) - len(chunks) * t_h) /
                              (len(chunks) * (L - K) * t_l) if chunks else None),
        })
    return out


def median_of(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def analyse(args, layout, runs):
    """The cost model of each repeat (its own T_full and T_static), then medians over repeats.

    Deriving t_l and t_h within a repeat pairs runs that were adjacent in time, so a change in
    the machine's load between repeats cancels in the ratios; the medians then drop the repeats
    that a burst of load upset. The measured and predicted speedups are medians of the
    per-repeat figures and `rel_*` compare those medians.
    """
    L, K, N = args.layers, args.exit_layer, args.decode_tokens
    per_repeat = []
    for rep in range(args.repeats):
        times = {name: rs[rep]["decode_ms_per_token"] for name, rs in runs.items()}
        prompt_ms = {int(name.split("@")[1]): rs[rep]["prompt_tokens"] * 1e3 /
                     rs[rep]["prefill_tokens_per_s"]
                     for name, rs in runs.items() if name.startswith("chunk@")}
        per_repeat.append(cost_model(args, times, prompt_ms))
    scalars = [k for k in per_repeat[0] if k not in ("free", "kappa", "prompt_pass_ms")]
    result = {k: median_of(m[k] for m in per_repeat) for k in scalars}
    for key in ("kappa", "prompt_pass_ms"):
        result[key] = {m: median_of(r[key][m] for r in per_repeat) for m in per_repeat[0][key]}
    result["head_over_layer_weight_bytes"] = args.weight_ratio
    rows = []
    for i, r in enumerate(args.rates):
        decisions = forced_decisions(r, WARMUP_CHECKS, N)
        chunks, trailing = deep_chunks(decisions)
        row = {"rate": r, "realized_rate": sum(decisions) / N, "deep_passes": len(chunks),
               "deep_chunks": chunks, "trailing_exits": trailing,
               "mean_chunk": statistics.mean(chunks) if chunks else None}
        for key in per_repeat[0]["free"][i]:
            values = [m["free"][i][key] for m in per_repeat]
            row[key] = median_of(values)
            row[key + "_per_repeat"] = values
        for suffix in ("", "_realized", "_chunks"):
            row["rel_diff" + suffix] = row["speedup"] / row["predicted_speedup" + suffix] - 1
        rows.append(row)
    result["free"] = rows
    result["per_repeat"] = [{k: v for k, v in m.items() if k != "free"} for m in per_repeat]
    result["comm_ms_per_decode_token_by_rank"] = {
        name: [median_of(run["ranks"][k]["comm_ms_per_decode_token"] for run in rs)
               for k in range(len(rs[0]["ranks"]))] for name, rs in runs.items()}
    pp = 2 if layout == "pp2" else 1
    stage_end, exit_stage = 0, 0  # balanced stages, as runtime/shard_plan.cc splits them
    for stage in range(pp):
        stage_end += L // pp + (1 if stage < L % pp else 0)
        if K - 1 < stage_end:
            exit_stage = stage
            break
    result["exit_stage"] = exit_stage
    return result


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def print_table(args, results):
    L, K = args.layers, args.exit_layer
    print(f"\nL = {L}, K = {K}, N = {args.decode_tokens} decode tokens, "
          f"prompt {args.prompt_tokens}, "
          f"{args.threads} thread(s)/rank, medians of {args.repeats} repeats; speedup = T_full / T")
    for layout, a in results.items():
        comm = a["comm_ms_per_decode_token_by_rank"]
        comm_txt = "" if layout == "tp1" else (
            "  comm ms/token (ranks) plain " + "/".join(f"{c:.0f}" for c in comm["plain"]))
        print(f"\n[{layout}] T_full {a['T_full_ms']:.1f} ms  T_static {a['T_static_ms']:.1f} ms "
              f"(x{a['static_speedup']:.2f})  t_l {a['t_l_ms']:.2f}  t_h {a['t_h_ms']:.2f} ms  "
              f"t_h/t_l {a['t_h_over_t_l']:.2f} (bytes {a['head_over_layer_weight_bytes']:.2f}, "
              f"fixed ~{a['fixed_ms_per_step_estimate']:.1f} ms/step)"
              + (f"  exit on stage {a['exit_stage']}" if layout == "pp2" else ""))
        print("  kappa(m) " + "  ".join(f"{m}: {k:.2f}" for m, k in a["kappa"].items())
              + "  (prompt pass ms " + "/".join(f"{v:.0f}" for v in a["prompt_pass_ms"].values())
              + ")" + comm_txt)
        print(f"  {'r':>4} {'r_hat':>6} {'T ms':>7} {'meas.':>6} {'range':>11} | "
              f"{'pred(r)':>7} {'diff':>7} | {'pred(r^)':>8} {'diff':>7} | "
              f"{'pred(chunks)':>12} {'diff':>7} | {'chunks':>6} {'kappa_impl':>10}")
        for row in a["free"]:
            spread = row["speedup_per_repeat"]
            rng = f"{min(spread):.2f}-{max(spread):.2f}"
            print(f"  {row['rate']:>4.1f} {row['realized_rate']:>6.3f} {row['ms_per_token']:>7.1f} "
                  f"{row['speedup']:>6.2f} {rng:>11} | {row['predicted_speedup']:>7.2f} "
                  f"{row['rel_diff']:>+7.1%} | {row['predicted_speedup_realized']:>8.2f} "
                  f"{row['rel_diff_realized']:>+7.1%} | {row['predicted_speedup_chunks']:>12.2f} "
                  f"{row['rel_diff_chunks']:>+7.1%} | {fmt(row['mean_chunk'], '6.2f')} "
                  f"{fmt(row['kappa_implied'], '10.2f')}")
    print("\ndiff = measured / predicted speedup - 1 (target: within 15 %). pred(r): §6.7 at the "
          "nominal rate; pred(r^): at the run's realized rate; pred(chunks): the realized deep "
          "chunks with the measured kappa(m) (linear between the measured m); chunks: mean rows "
          "per deep pass; kappa_impl: the mean kappa over the deep passes that T implies.")


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", default=DEFAULT_BINARY)
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="checkpoint directory (written if missing)")
    p.add_argument("--layers", type=int, default=12,
                   help="L of the checkpoint written when --model holds none")
    p.add_argument("--exit-layer", type=int, default=3, help="K (FREE's L_s and STATIC's depth)")
    p.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.6, 0.8])
    p.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--decode-tokens", type=int, default=40,
                   help="N; 40 gives realized rates 0.55 and 0.85 for 0.6 and 0.8")
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="CPU threads per rank")
    p.add_argument("--timeout", type=int, default=600, help="seconds per bench process")
    p.add_argument("--attempts", type=int, default=3,
                   help="tries per bench process (retries a failed launch, e.g. during a rebuild)")
    p.add_argument("--out", default=DEFAULT_OUT)
    args = p.parse_args()
    config = ensure_checkpoint(args.model, args.layers)
    args.layers = config["num_hidden_layers"]  # L of the checkpoint used
    args.weight_ratio = weight_ratio(config)
    if not 1 <= args.exit_layer < args.layers:
        sys.exit(f"--exit-layer must be in [1, {args.layers - 1}] for {args.model}")
    configs = configurations(args)
    runs = {layout: {c[0]: [] for c in configs} for layout in args.layouts}
    start = time.time()
    for rep in range(args.repeats):
        # Each layout's configurations run back to back (the repeat's cost model pairs them);
        # the layouts and the configurations within them rotate from repeat to repeat.
        layouts = args.layouts[rep % len(args.layouts):] + args.layouts[:rep % len(args.layouts)]
        for layout in layouts:
            order = configs[rep % len(configs):] + configs[:rep % len(configs)]
            if rep % 2:
                order.reverse()
            for name, sets, prompt_tokens, decode_tokens in order:
                result = run_bench(args, layout, sets, prompt_tokens, decode_tokens)
                runs[layout][name].append(result)
                prompt_ms = prompt_tokens * 1e3 / result["prefill_tokens_per_s"]
                print(f"[{time.time() - start:6.0f} s] repeat {rep + 1}/{args.repeats} "
                      f"{layout:>3} {name:<9} {result['decode_ms_per_token']:7.1f} ms/token"
                      + (f", prompt pass {prompt_ms:.1f} ms" if name.startswith("chunk@") else ""),
                      flush=True)

    results = {layout: analyse(args, layout, runs[layout]) for layout in args.layouts}
    print_table(args, results)

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({
            "spec": "shared/specs/early_exit.md §6.7",
            "model": args.model, "layers": args.layers, "exit_layer": args.exit_layer,
            "prompt_tokens": args.prompt_tokens, "decode_tokens": args.decode_tokens,
            "repeats": args.repeats, "threads_per_rank": args.threads,
            "warmup_checks": WARMUP_CHECKS, "wall_s": time.time() - start,
            # A rebuild during the run shows up as more than one time here.
            "binary_mtimes": sorted({r["binary_mtime"] for rs in runs.values()
                                     for rl in rs.values() for r in rl}),
            "command": " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]),
            "layouts": results,
            # Every bench run, in repeat order: decode ms/token, prompt length and prefill rate.
            "runs": {layout: {name: [{k: r[k] for k in ("decode_ms_per_token", "prompt_tokens",
                                                        "prefill_tokens_per_s")} for r in rs]
                              for name, rs in by_name.items()}
                     for layout, by_name in runs.items()},
        }, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
