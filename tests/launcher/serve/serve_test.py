"""`tessera serve` end to end: serve_test.py TESSERA_BINARY [MPIEXEC].

Starts the server on the llama2_mha test model (alone, then at tp2, pp2 and tp2 x pp2 under MPIEXEC
when given; the pipeline layouts run the log-likelihood and generation checks; dp2 and dp2 x tp2,
one server per replica, the log-likelihoods) and checks, each with its own assertion:
  - lm-evaluation-harness's loglikelihood requests (token-id prompts, max_tokens 1, echo,
    logprobs 1), parsed as its local-completions client parses them, against the transformers
    log-likelihoods and greediness in tests/fixtures/eval/reference_llama2_mha.json;
  - greedy text equals `tessera generate`; streamed text equals the unstreamed text;
  - concurrent clients get the sequential answers, none lost or duplicated;
  - every error class answers its status with an OpenAI error body, and the server still answers;
  - /v1/models, /tokenizer_info, /tokenize, /detokenize, /metrics; SIGTERM ends every rank with 0.
Standard library only.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
MC_MODEL = os.path.join(ROOT, "tests/fixtures/models/llama2_mha")  # transformers' fixture
MODEL = os.path.join(ROOT, "models/tessera-code-tiny")  # trained: its text is not empty
FIXTURE = os.path.join(ROOT, "tests/fixtures/eval/reference_llama2_mha.json")
MC_DATA = os.path.join(ROOT, "tests/fixtures/eval/multiple_choice.jsonl")
failures = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what, flush=True)
    if not ok:
        failures.append(what)


def children(pid):
    """Pids whose parent is `pid`, from /proc (no procps needed)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                out.append(entry)
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, binary, mpiexec=None, tp=1, extra=(), model=MODEL, pp=1, dp=1):
        # With dp > 1 each replica's leader takes a free port (--port 0) and prints it; `ports`
        # lists them by replica, `port` is replica 0's.
        self.port = free_port() if dp == 1 else 0
        self.ranks = tp * pp * dp
        cmd = [binary, "serve", "--model", model, "--port", str(self.port), "--max-batch", "8",
               "--threads", "1", *extra]
        if self.ranks > 1:
            cmd = [mpiexec, "--oversubscribe", "--allow-run-as-root", "-np", str(self.ranks), *cmd,
                   "--tp", str(tp), "--pp", str(pp), "--dp", str(dp)]
        self.log = tempfile.NamedTemporaryFile("w+", prefix="serve_test_", suffix=".log",
                                               delete=False)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited: " + self.output())
            if dp > 1:
                found = dict(re.findall(r"on http://127\.0\.0\.1:(\d+) \(replica (\d+) of",
                                        self.output()))
                self.ports = [int(p) for p, r in sorted(found.items(), key=lambda x: int(x[1]))]
                if len(self.ports) < dp:
                    time.sleep(0.2)
                    continue
                self.port = self.ports[0]
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not start: " + self.output())

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def request(self, method, path, body=None, raw=None):
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                     method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def get(self, path):
        return self.request("GET", path)

    def post(self, path, body=None, raw=None):
        status, text = self.request("POST", path, body, raw)
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def stop(self):
        # Under mpirun every rank gets the signal, as Slurm's scancel delivers it.
        if self.ranks > 1:
            for pid in children(self.proc.pid):
                os.kill(int(pid), signal.SIGTERM)
        else:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = "hang"
        return code


def tokenize(server, text):
    return server.post("/tokenize", {"prompt": text, "add_special_tokens": False})[1]["tokens"]


def encode_pair(server, context, continuation):
    # lm-evaluation-harness's split: trailing context spaces move into the continuation.
    n = len(context) - len(context.rstrip())
    if n:
        continuation = context[-n:] + continuation
        context = context[:-n]
    whole = tokenize(server, context + continuation)
    ctx = tokenize(server, context)
    return ctx, whole[len(ctx):]


def check_loglikelihood(server, label):
    reference = json.load(open(FIXTURE))["multiple_choice"]["samples"]
    items = [json.loads(line) for line in open(MC_DATA) if line.strip()]
    worst = 0.0
    greedy_ok = True
    for item, ref in zip(items, reference):
        prompts, ctxlens = [], []
        for choice in item["choices"]:
            ctx, cont = encode_pair(server, item["context"], choice)
            prompts.append([1] + ctx + cont)
            ctxlens.append(1 + len(ctx))
        status, out = server.post("/v1/completions", {
            "model": None, "prompt": prompts, "temperature": 0, "max_tokens": 1, "logprobs": 1,
            "seed": 1234, "echo": True})
        if status != 200:
            check(False, f"{label}: loglikelihood request answered {status}: {out}")
            return
        choices = sorted(out["choices"], key=lambda c: c["index"])
        for choice, ctxlen, want, want_greedy in zip(choices, ctxlens, ref["loglikelihoods"],
                                                     ref["is_greedy"]):
            lp = choice["logprobs"]
            values = lp["token_logprobs"][ctxlen:-1]
            greedy = all(v == max(t.values()) for v, t in zip(values, lp["top_logprobs"][ctxlen:-1]))
            worst = max(worst, abs(sum(values) - want))
            greedy_ok = greedy_ok and greedy == want_greedy
            greedy_ok = greedy_ok and lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    check(worst < 2e-4, f"{label}: log-likelihoods equal transformers' (max |diff| {worst:.2e})")
    check(greedy_ok, f"{label}: is_greedy as lm-eval reads it equals transformers'")


def generate_cli(binary, prompt, n):
    out = subprocess.run([binary, "generate", "--model", MODEL, "--prompt", prompt,
                          "--max-new-tokens", str(n), "--threads", "1"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    return out.stdout[:-1] if out.stdout.endswith("\n") else out.stdout  # generate adds one


def check_generation(server, binary, label):
    prompt = "def fibonacci(n):"
    status, out = server.post("/v1/completions", {"prompt": prompt, "max_tokens": 12,
                                                  "temperature": 0})
    want = generate_cli(binary, prompt, 12)
    check(status == 200 and want != "" and out["choices"][0]["text"] == want,
          f"{label}: greedy text equals tessera generate ({out['choices'][0]['text']!r} vs {want!r})")
    # Streaming: the events' text is the whole text.
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}/v1/completions",
                                 data=json.dumps({"prompt": prompt, "max_tokens": 12,
                                                  "temperature": 0, "stream": True}).encode(),
                                 headers={"Content-Type": "application/json"})
    text, done, finish = "", False, None
    with urllib.request.urlopen(req, timeout=300) as r:
        for line in r.read().decode().split("\n"):
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                ev = json.loads(line[6:])
                text += ev["choices"][0]["text"]
                finish = ev["choices"][0]["finish_reason"] or finish
    check(done and text == want and finish == "length", f"{label}: streamed text equals it")
    # Generated-token log-probabilities: the greedy token is its own top-1.
    status, out = server.post("/v1/completions", {"prompt": prompt, "max_tokens": 4,
                                                  "temperature": 0, "logprobs": 2})
    lp = out["choices"][0]["logprobs"]
    check(status == 200 and len(lp["token_logprobs"]) == 4 and
          all(v == max(t.values()) and len(t) <= 2 for v, t in zip(lp["token_logprobs"],
                                                                   lp["top_logprobs"])),
          f"{label}: generated tokens' log-probabilities, greedy tokens at their top-1")


def check_chat(server, label):
    """/v1/chat/completions with the Llama-2 template: the streamed chat.completion.chunk deltas
    (role first, then content, then the finish reason) add up to the unstreamed message."""
    body = {"messages": [{"role": "user", "content": "Write a function."}], "max_tokens": 10,
            "temperature": 0}
    status, out = server.post("/v1/chat/completions", body)
    want = out["choices"][0]["message"]["content"] if status == 200 else None
    check(status == 200 and out["object"] == "chat.completion" and want,
          f"{label}: chat completion ({status}, {want!r})")
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}/v1/chat/completions",
                                 data=json.dumps(dict(body, stream=True)).encode(),
                                 headers={"Content-Type": "application/json"})
    events, done = [], False
    with urllib.request.urlopen(req, timeout=300) as r:
        for line in r.read().decode().split("\n"):
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                events.append(json.loads(line[6:]))
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    check(done and events and all(e["object"] == "chat.completion.chunk" for e in events) and
          events[0]["choices"][0]["delta"].get("role") == "assistant" and text == want and
          events[-1]["choices"][0]["finish_reason"] == "length",
          f"{label}: streamed chat deltas add up to the message ({text!r})")


def prompt_logprobs(server, ids):
    status, out = server.post("/v1/completions", {"prompt": ids, "max_tokens": 1, "echo": True,
                                                  "logprobs": 1, "temperature": 0})
    if status != 200:
        return status, out
    return status, out["choices"][0]["logprobs"]["token_logprobs"][1:len(ids)]


def check_sparse_attention(binary, mpiexec):
    """A method that changes attention (Top-k, k = 8) scores prompts through the server: the
    same log-probabilities at tp 1 and tp 2, and not the dense ones."""
    method = os.path.join(tempfile.mkdtemp(), "topk.textproto")
    with open(method, "w") as f:
        f.write("sparse_attention { kind: TOP_K k: 8 placement: PRE_SOFTMAX sdc: SDC_EXACT "
                "vmc: true }\n")
    text = open(os.path.join(ROOT, "configs/tasks/data/code_files.jsonl")).readline()
    runs = {}
    for label, tp, extra in (("dense", 1, []), ("topk tp1", 1, ["--method", method]),
                             ("topk tp2", 2, ["--method", method])):
        if tp > 1 and not mpiexec:
            continue
        server = Server(binary, mpiexec if tp > 1 else None, tp, extra=extra)
        try:
            ids = [1] + tokenize(server, json.loads(text)["text"])[:300]
            status, values = prompt_logprobs(server, ids)
            check(status == 200, f"sparse attention {label}: prompt log-probabilities answered "
                                 f"{status} {values if status != 200 else ''}")
            runs[label] = values if status == 200 else None
        finally:
            check(server.stop() == 0, f"sparse attention {label}: the server stops cleanly")
    if runs.get("dense") and runs.get("topk tp1"):
        moved = max(abs(a - b) for a, b in zip(runs["dense"], runs["topk tp1"]))
        check(moved > 1e-3, f"sparse attention: Top-k changes the log-probabilities ({moved:.2e})")
    if runs.get("topk tp1") and runs.get("topk tp2"):
        diff = max(abs(a - b) for a, b in zip(runs["topk tp1"], runs["topk tp2"]))
        check(diff < 2e-4, f"sparse attention: tp2 scores as tp1 (max |diff| {diff:.2e})")


def check_data_parallel(binary, mpiexec, tp):
    """--dp 2: each replica's leader serves on its own port; both answer transformers'
    log-likelihoods, and SIGTERM ends every rank with 0."""
    label = "dp2" + (f"xtp{tp}" if tp > 1 else "")
    server = Server(binary, mpiexec, tp=tp, dp=2, model=MC_MODEL)
    try:
        check(len(set(server.ports)) == 2, f"{label}: two replicas on two ports ({server.ports})")
        for k, port in enumerate(server.ports):
            server.port = port
            check_loglikelihood(server, f"{label} replica {k}")
    finally:
        code = server.stop()
    check(code == 0, f"{label}: SIGTERM ends every rank with exit 0 (got {code})")


def world_rank(pid):
    try:
        env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"OMPI_COMM_WORLD_RANK="):
            return int(item.split(b"=", 1)[1])
    return None


def check_rank_death(binary, mpiexec):
    """A rank killed under a tp2 server ends the job with a non-zero exit, without a hang."""
    server = Server(binary, mpiexec, tp=2, extra=["--comm-timeout-s", "10"])
    follower = [p for p in children(server.proc.pid) if world_rank(p) == 1]
    check(len(follower) == 1, f"rank death: rank 1 found among mpirun's children ({follower})")
    if not follower:
        server.stop()
        return
    os.kill(int(follower[0]), signal.SIGKILL)
    start = time.time()
    try:
        code = server.proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        code = "hang"
    check(code not in (0, "hang"),
          f"rank death: the server ends with a non-zero exit ({code}) in {time.time() - start:.1f} s")


def check_concurrency(server, label):
    prompts = [f"def f{i}(x):" for i in range(8)]
    body = lambda p: {"prompt": p, "max_tokens": 6, "temperature": 0}
    sequential = {p: server.post("/v1/completions", body(p))[1]["choices"][0]["text"]
                  for p in prompts}
    answers, lock = [], threading.Lock()

    def client(k):
        for j in range(3):
            p = prompts[(k + j) % len(prompts)]
            status, out = server.post("/v1/completions", body(p))
            with lock:
                answers.append((p, status, out["choices"][0]["text"] if status == 200 else out))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(len(answers) == 24 and all(s == 200 and t == sequential[p] for p, s, t in answers),
          f"{label}: 8 concurrent clients x 3 requests get the sequential answers")
    # Continuous admission: a short request sent while a long one generates joins its wave and
    # is answered before it; both equal their answers alone.
    long_body = {"prompt": "class A:", "max_tokens": 300, "temperature": 0, "ignore_eos": True}
    short_body = body(prompts[0])
    long_alone = server.post("/v1/completions", long_body)[1]["choices"][0]["text"]
    done = {}

    def timed(name, b):
        out = server.post("/v1/completions", b)[1]
        done[name] = (time.perf_counter(), out["choices"][0]["text"])

    long_thread = threading.Thread(target=timed, args=("long", long_body))
    long_thread.start()
    time.sleep(0.05)
    timed("short", short_body)
    long_thread.join()
    admitted = metric(server, "tessera:admitted_requests_total")
    check(done["short"][0] < done["long"][0] and done["short"][1] == sequential[prompts[0]] and
          done["long"][1] == long_alone and admitted >= 1,
          f"{label}: a request admitted into a running wave is answered first, both as alone "
          f"(admitted_requests_total {admitted})")


def metric(server, name):
    """The value of an unlabelled-except-model_name metric from GET /metrics."""
    for line in server.get("/metrics")[1].splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return float("nan")


def check_errors(server, label):
    cases = [
        ("malformed JSON", dict(raw=b"{\"prompt\": "), 400, None),
        ("invalid UTF-8", dict(raw=b"{\"prompt\": \"\xff\xfe\"}"), 400, None),
        ("not an object", dict(body=[1, 2]), 400, None),
        ("unknown field", dict(body={"prompt": "a", "max_tokenz": 3}), 400, "max_tokenz"),
        ("wrong type", dict(body={"prompt": "a", "max_tokens": "3"}), 400, "max_tokens"),
        ("negative max_tokens", dict(body={"prompt": "a", "max_tokens": -1}), 400, "max_tokens"),
        ("max_tokens past the context", dict(body={"prompt": "a", "max_tokens": 100000}), 400,
         "max_tokens"),
        ("token id out of range", dict(body={"prompt": [1, 5, 10**6]}), 400, "prompt[2]"),
        ("prompt longer than the context", dict(body={"prompt": [1] * 5000}), 400, "prompt"),
        ("n > 1", dict(body={"prompt": "a", "n": 2}), 400, "n"),
        ("no prompt", dict(body={"max_tokens": 2}), 400, "prompt"),
        ("another model", dict(body={"prompt": "a", "model": "gpt-9"}), 404, "model"),
    ]
    for name, kw, want, param in cases:
        status, out = server.post("/v1/completions", **kw)
        ok = status == want and isinstance(out, dict) and "message" in out.get("error", {})
        if param is not None:
            ok = ok and out["error"]["param"] == param
        check(ok, f"{label}: {name} -> {status} {out if not ok else ''}")
    status, out = server.post("/v1/nothing", {})
    check(status == 404 and "error" in out, f"{label}: unknown route -> 404")
    status, out = server.post("/v1/completions", {"prompt": "x = ", "max_tokens": 2,
                                                  "temperature": 0})
    check(status == 200 and server.get("/health")[0] == 200,
          f"{label}: the server still answers after the errors")


def check_endpoints(server, label):
    status, models = server.get("/v1/models")
    check(status == 200 and json.loads(models)["data"][0]["id"] == "tessera-code-tiny",
          f"{label}: /v1/models")
    info = json.loads(server.get("/tokenizer_info")[1])
    check(info["eos_token"] == "</s>", f"{label}: /tokenizer_info names the EOS")
    check(tokenize(server, "</s>") == [2] and tokenize(server, "<s>") == [1],
          f"{label}: /tokenize maps special-token text to its id")
    ids = tokenize(server, "def f(x): return x")
    status, out = server.post("/detokenize", {"tokens": ids})
    check(out.get("prompt") == "def f(x): return x", f"{label}: /detokenize inverts /tokenize")
    metrics = server.get("/metrics")[1]
    check("tessera:request_success_total" in metrics and "tessera:e2e_request_latency_seconds_bucket"
          in metrics and 'status="400"' in metrics, f"{label}: /metrics in Prometheus text")


def main():
    binary = sys.argv[1]
    mpiexec = sys.argv[2] if len(sys.argv) > 2 else None
    full = [check_generation, check_concurrency, check_errors, check_endpoints]
    # (tp, pp, checks on the embedded model): every check alone and at tp2; the pipeline layouts
    # with the log-likelihoods and generation.
    layouts = [(1, 1, full)] + ([(2, 1, full), (1, 2, [check_generation]),
                                 (2, 2, [check_generation])] if mpiexec else [])
    for tp, pp, model_checks in layouts:
        label = f"tp{tp}" + (f"xpp{pp}" if pp > 1 else "")
        for model, checks in [(MC_MODEL, [check_loglikelihood]), (MODEL, model_checks)]:
            server = Server(binary, mpiexec, tp, model=model, pp=pp)
            try:
                for c in checks:
                    if c is check_generation:
                        c(server, binary, label)
                    else:
                        c(server, label)
            finally:
                code = server.stop()
            check(code == 0, f"{label}: SIGTERM ends every rank with exit 0 (got {code})")
            if failures:
                print(server.output()[-3000:])
    if mpiexec:
        check_rank_death(binary, mpiexec)
        for tp in (1, 2):
            check_data_parallel(binary, mpiexec, tp)
    check_sparse_attention(binary, mpiexec)
    server = Server(binary, extra=["--chat-template", "llama-2"])
    try:
        check_chat(server, "tp1 chat")
    finally:
        check(server.stop() == 0, "tp1 chat: the server stops cleanly")
    # A bounded queue: with one waiting request allowed, a burst gets 429s and the rest answers.
    server = Server(binary, extra=["--max-waiting-requests", "1"])
    statuses, lock = [], threading.Lock()

    def burst():
        s, _ = server.post("/v1/completions", {"prompt": "def g():", "max_tokens": 24,
                                                "temperature": 0})
        with lock:
            statuses.append(s)

    threads = [threading.Thread(target=burst) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(429 in statuses and 200 in statuses and set(statuses) <= {200, 429},
          f"bounded queue: a burst of 12 gets 200s and 429s ({sorted(statuses)})")
    check(server.stop() == 0, "bounded queue: the server stops cleanly")
    print(f"{len(failures)} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
