#!/usr/bin/env python3
"""`tessera serve` under a bounded load against `tessera generate --prompts`, in the same run.

The same --requests greedy completions (the held-out next-line prompts of
configs/tasks/data/code_next_line_gen.jsonl, cycled; --max-tokens tokens each, EOS ignored) are
sent by 1, 8 and 32 concurrent clients over loopback to one server, and made by
`tessera generate --prompts` runs at the batch the clients can fill (min(clients, --max-batch)). Reports requests/s, generated
tokens/s and p50 / p99 request latency per concurrency, the server's tokens/s as a fraction of
generate's (its overhead), checks that every answer equals generate's text, and that the server
is healthy afterwards and stops cleanly on SIGTERM.

    python3 tools/bench/serve_load.py [--binary build/launcher/tessera] [--requests 64]
        [--out /tmp/serve_load.json]

Standard library only. Loopback only; every client request has a 300 s timeout.
"""
import argparse
import json
import os
import queue
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROMPTS = os.path.join(REPO, "configs", "tasks", "data", "code_next_line_gen.jsonl")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions",
                                 data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())


def percentile(values, q):
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def load(port, prompts, concurrency, max_tokens):
    """Sends every prompt once from `concurrency` client threads; returns (wall s, latencies,
    texts, generated tokens)."""
    work = queue.Queue()
    for i, p in enumerate(prompts):
        work.put((i, p))
    latencies, texts, tokens, errors = [0.0] * len(prompts), [None] * len(prompts), [0], []
    lock = threading.Lock()

    def client():
        while True:
            try:
                i, p = work.get_nowait()
            except queue.Empty:
                return
            t0 = time.perf_counter()
            try:
                r = post(port, {"prompt": p, "max_tokens": max_tokens, "temperature": 0,
                                "ignore_eos": True})
            except Exception as e:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(f"request {i}: {e}")
                continue
            latencies[i] = time.perf_counter() - t0
            texts[i] = r["choices"][0]["text"]
            with lock:
                tokens[0] += r["usage"]["completion_tokens"]

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError("; ".join(errors[:5]))
    return time.perf_counter() - start, latencies, texts, tokens[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", default=os.path.join(REPO, "build", "launcher", "tessera"))
    ap.add_argument("--model", default=os.path.join(REPO, "models", "tessera-code-tiny"))
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="0: one per core")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args()
    base = [json.loads(line)["prompt"] for line in open(PROMPTS)]
    prompts = [base[i % len(base)] for i in range(args.requests)]
    common = ["--model", args.model, "--max-batch", str(args.max_batch), "--threads",
              str(args.threads)]

    concurrencies = [int(x) for x in args.concurrency.split(",")]
    figures = {"requests": args.requests, "max_tokens": args.max_tokens,
               "max_batch": args.max_batch, "generate": {}, "serve": {}}
    want = None
    with tempfile.TemporaryDirectory() as tmp:
        prompts_file = os.path.join(tmp, "prompts.jsonl")
        with open(prompts_file, "w") as f:
            for p in prompts:
                f.write(json.dumps({"prompt": p}) + "\n")
        # One generate run per batch size the clients can fill: min(clients, --max-batch).
        for batch in sorted({min(c, args.max_batch) for c in concurrencies}):
            out_file = os.path.join(tmp, f"out{batch}.jsonl")
            t0 = time.perf_counter()
            subprocess.run([args.binary, "generate", *common[:2], "--max-batch", str(batch),
                            *common[4:], "--prompts", prompts_file, "--max-new-tokens",
                            str(args.max_tokens), "--ignore-eos", "--output", out_file],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           cwd=REPO)
            wall = time.perf_counter() - t0
            rows = sorted((json.loads(l) for l in open(out_file)), key=lambda r: r["index"])
            texts = [r["text"] for r in rows]
            if want is not None and texts != want:
                sys.exit(f"generate --max-batch {batch} differs from a smaller batch")
            want = texts
            figures["generate"][str(batch)] = {
                "wall_s": wall, "requests_per_s": args.requests / wall,
                "tokens_per_s": sum(r["generated_tokens"] for r in rows) / wall,
                "note": "process wall time, model load included"}

    port = free_port()
    log = open(os.path.join(tempfile.gettempdir(), f"serve_load_{port}.log"), "w")
    server = subprocess.Popen([args.binary, "serve", *common, "--port", str(port)], cwd=REPO,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    sys.exit(f"the server did not start (see {log.name})")
                time.sleep(0.2)
        post(port, {"prompt": prompts[0], "max_tokens": 2, "temperature": 0})  # warm-up
        mismatches = 0
        for c in concurrencies:
            wall, lat, texts, tokens = load(port, prompts, c, args.max_tokens)
            peer = figures["generate"][str(min(c, args.max_batch))]
            mismatches += sum(a != b for a, b in zip(texts, want))
            figures["serve"][str(c)] = {
                "wall_s": wall, "requests_per_s": args.requests / wall,
                "tokens_per_s": tokens / wall,
                "latency_p50_ms": 1e3 * statistics.median(lat),
                "latency_p99_ms": 1e3 * percentile(lat, 0.99),
                "generate_batch": min(c, args.max_batch),
                "tokens_per_s_vs_generate": (tokens / wall) / peer["tokens_per_s"]}
        healthy = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).status
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=60)
    figures["answers_equal_generate"] = mismatches == 0
    figures["healthy_after"] = healthy == 200
    figures["server_exit_code"] = code

    print(f"{args.requests} greedy requests of {args.max_tokens} tokens; server --max-batch "
          f"{args.max_batch}; generate --prompts at --max-batch min(clients, {args.max_batch})")
    print("| clients | req/s | tok/s | p50 ms | p99 ms | generate tok/s | serve / generate |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for c, f in figures["serve"].items():
        g = figures["generate"][str(f["generate_batch"])]
        print(f"| {c} | {f['requests_per_s']:.2f} | {f['tokens_per_s']:.0f} | "
              f"{f['latency_p50_ms']:.0f} | {f['latency_p99_ms']:.0f} | "
              f"{g['tokens_per_s']:.0f} | {f['tokens_per_s_vs_generate']:.2f} |")
    print(f"answers equal generate's: {mismatches == 0} ({mismatches} differ); healthy after: "
          f"{healthy == 200}; exit code on SIGTERM: {code}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(figures, f, indent=1)
    sys.exit(0 if mismatches == 0 and healthy == 200 and code == 0 else 1)


if __name__ == "__main__":
    main()
