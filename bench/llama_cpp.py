#!/usr/bin/env python3
"""Tessera against llama.cpp on the CPU: the same checkpoints, the same precision, the same run.

Builds the peer the same way every time (llama.cpp from PyPI's llama-cpp-python source
distribution, CPU only, -march=native, no BLAS), converts each checkpoint to GGUF
(bench/hf_to_gguf.py), then runs interleaved rounds of `tessera bench` and llama.cpp's
`llama-batched-bench` / `llama-bench` on the same shapes and prints Tessera / llama.cpp ratios
(minimum-time and median-time), plus each side's fraction of the memory bandwidth that
`tessera bench` measures in the same run. It is a benchmark, not a test: it is not in CI.

Cases (all with --threads / -t set to the core count):
  prefill     128-token prompt, batch 1 (tokens/s)
  decode_b1   32 tokens after a 128-token prompt, batch 1 (tokens/s)
  decode_b8   32 tokens after 128-token prompts, 8 sequences (tokens/s over all of them)
  e2e_b8      8 x (128 + 32) tokens, prefill and decode (tokens/s)
  decode_empty (with --empty-context) 32 tokens from a 1-token context (tokens/s)

  python3 bench/llama_cpp.py --model bf16=/path/llama-1b-bf16 --model f32=/path/llama-1b-f32 \\
      --model tiny=models/tessera-code-tiny --empty-context tiny --rounds 3

Everything it installs goes under --work (default build/peer): the source distribution, the
llama.cpp build, a virtual environment for the converter (numpy, pyyaml, sentencepiece) and the
GGUF files.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PEER_VERSION = "0.3.36"


def run(cmd, **kw):
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=True, text=True, **kw)


def build_peer(work, jobs):
    """llama-batched-bench and llama-bench from the llama-cpp-python sdist's vendored llama.cpp."""
    src = os.path.join(work, f"llama_cpp_python-{PEER_VERSION}", "vendor", "llama.cpp")
    bins = {name: os.path.join(src, "build", "bin", name) for name in ("llama-batched-bench", "llama-bench")}
    if all(os.path.isfile(b) for b in bins.values()):
        return src, bins
    os.makedirs(work, exist_ok=True)
    sdist = os.path.join(work, f"llama_cpp_python-{PEER_VERSION}.tar.gz")
    if not os.path.isfile(sdist):
        run([sys.executable, "-m", "pip", "download", f"llama-cpp-python=={PEER_VERSION}", "--no-deps",
             "--no-binary", ":all:", "-d", work])
    if not os.path.isdir(src):
        with tarfile.open(sdist) as t:
            t.extractall(work)
    run(["cmake", "-S", src, "-B", os.path.join(src, "build"), "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON",
         "-DGGML_CUDA=OFF", "-DGGML_BLAS=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
         "-DLLAMA_BUILD_SERVER=OFF"], stdout=subprocess.DEVNULL)
    run(["cmake", "--build", os.path.join(src, "build"), "--target", "llama-batched-bench", "llama-bench",
         "-j", str(jobs)], stdout=subprocess.DEVNULL)
    return src, bins


def converter_python(work):
    venv = os.path.join(work, "venv")
    python = os.path.join(venv, "bin", "python")
    if not os.path.isfile(python):
        run([sys.executable, "-m", "venv", venv])
        run([python, "-m", "pip", "install", "-q", "numpy", "pyyaml", "sentencepiece"])
    return python


def to_gguf(python, src, work, name, model_dir):
    out = os.path.join(work, "gguf", f"{name}.gguf")
    newest = max(os.path.getmtime(os.path.join(model_dir, f)) for f in os.listdir(model_dir))
    if not os.path.isfile(out) or os.path.getmtime(out) < newest:
        os.makedirs(os.path.dirname(out), exist_ok=True)
        run([python, os.path.join(HERE, "hf_to_gguf.py"), "--model", model_dir, "--out", out, "--gguf-py",
             os.path.join(src, "gguf-py")], stdout=subprocess.DEVNULL)
    return out


def tessera_bench(binary, model, threads, prompt, decode, batch):
    cmd = [binary, "bench", "--model", model, "--threads", str(threads), "--prompt-tokens", str(prompt),
           "--decode-tokens", str(decode), "--batch", str(batch)]
    out = run(cmd, stdout=subprocess.PIPE).stdout
    return json.loads(out)


def llama_batched(binary, gguf, threads, prompt, decode, parallel):
    ctx = parallel * (prompt + decode) + 16
    cmd = [binary, "-m", gguf, "-t", str(threads), "-c", str(ctx), "-b", "2048", "-ub", "512", "-npp", str(prompt),
           "-ntg", str(decode), "-npl", str(parallel), "--output-format", "jsonl"]
    # This llama-batched-bench now and then exits 0 without printing anything (seen on the tiny
    # model, about one run in four); such a run is repeated.
    for _ in range(5):
        out = run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout
        rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        if rows:
            return rows[-1]
    sys.exit(f"llama-batched-bench printed no result for {gguf} in 5 runs")


def llama_tg_empty(binary, gguf, threads, decode):
    cmd = [binary, "-m", gguf, "-t", str(threads), "-p", "0", "-n", str(decode), "-r", "1", "-o", "json"]
    out = run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout
    return json.loads(out)[0]["avg_ts"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, help="NAME=DIR (a Hugging Face checkpoint)")
    p.add_argument("--empty-context", action="append", default=[], help="NAME: also time decode from a 1-token context")
    p.add_argument("--binary", default=os.path.join(ROOT, "build", "launcher", "tessera"))
    p.add_argument("--work", default=os.path.join(ROOT, "build", "peer"))
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--decode", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--out", help="write every sample and the summary as JSON")
    a = p.parse_args()

    src, bins = build_peer(a.work, a.threads)
    python = converter_python(a.work)
    models = dict(m.split("=", 1) for m in a.model)
    ggufs = {name: to_gguf(python, src, a.work, name, d) for name, d in models.items()}

    samples = {}  # (model, case) -> {"tessera": [tok/s], "llama.cpp": [tok/s]}
    bandwidth = []
    step_bytes = {}
    for r in range(a.rounds):
        for name, d in models.items():
            t1 = tessera_bench(a.binary, d, a.threads, a.prompt, a.decode, a.batch)
            bandwidth.append(t1["memory_read_bandwidth_bytes_per_s"])
            step_bytes[name] = t1["decode_weight_bytes_per_token_rank0"]
            one = llama_batched(bins["llama-batched-bench"], ggufs[name], a.threads, a.prompt, a.decode, 1)
            many = llama_batched(bins["llama-batched-bench"], ggufs[name], a.threads, a.prompt, a.decode, a.batch)
            pairs = {
                "prefill": (t1["prefill_tokens_per_s"], one["speed_pp"]),
                "decode_b1": (1e3 / t1["decode_ms_per_token"], one["speed_tg"]),
                f"decode_b{a.batch}": (t1["batched_decode_tokens_per_s"], many["speed_tg"]),
                f"e2e_b{a.batch}": (t1["batched_end_to_end_tokens_per_s"], many["speed"]),
            }
            if name in a.empty_context:
                t0 = tessera_bench(a.binary, d, a.threads, 1, a.decode, 1)
                pairs["decode_empty"] = (1e3 / t0["decode_ms_per_token"],
                                         llama_tg_empty(bins["llama-bench"], ggufs[name], a.threads, a.decode))
            for case, (ours, theirs) in pairs.items():
                s = samples.setdefault((name, case), {"tessera": [], "llama.cpp": []})
                s["tessera"].append(ours)
                s["llama.cpp"].append(theirs)
            print(f"round {r + 1}/{a.rounds} {name}: " +
                  ", ".join(f"{c} {o:.1f}/{t:.1f}" for c, (o, t) in pairs.items()), file=sys.stderr, flush=True)

    bw = max(bandwidth)
    print(f"\nmemory read bandwidth (tessera bench, best of the run): {bw / 1e9:.1f} GB/s; {a.threads} threads; "
          f"{a.rounds} interleaved rounds; llama.cpp {PEER_VERSION} (llama-cpp-python sdist)\n")
    print("| model | case | tessera tok/s (best, median) | llama.cpp tok/s (best, median) | ratio best | ratio median |"
          " bandwidth fraction tessera / llama.cpp |")
    print("|---|---|---:|---:|---:|---:|---:|")
    summary = []
    for (name, case), s in samples.items():
        ob, om = max(s["tessera"]), statistics.median(s["tessera"])
        tb, tm = max(s["llama.cpp"]), statistics.median(s["llama.cpp"])
        frac = ""
        if case.startswith("decode_b1") or case == "decode_empty":
            frac = f"{step_bytes[name] * om / bw:.2f} / {step_bytes[name] * tm / bw:.2f}"
        print(f"| {name} | {case} | {ob:.1f}, {om:.1f} | {tb:.1f}, {tm:.1f} | {ob / tb:.2f} | {om / tm:.2f} | {frac} |")
        summary.append({"model": name, "case": case, "tessera": s["tessera"], "llama_cpp": s["llama.cpp"],
                        "ratio_best": ob / tb, "ratio_median": om / tm})
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"bandwidth_bytes_per_s": bw, "threads": a.threads, "rounds": a.rounds,
                       "peer": f"llama.cpp from llama-cpp-python {PEER_VERSION}", "results": summary}, f, indent=1)


if __name__ == "__main__":
    main()
