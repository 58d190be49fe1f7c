#!/usr/bin/env python3
"""Train Tessera's embedded default model: a small Llama (GQA) on Python stdlib code.

Early-exit-aware: besides the final layer, the model is trained to predict the
next token at intermediate exits through the *shared* final RMSNorm and LM head
(exit logits at depth l = lm_head(norm(h^(l))), h^(l) = output of blocks
0..l-1).  The loss is the depth-weighted CE of CALM / FREE restricted to the
trained exits:  sum_l l*CE_l / sum_l l  over l in --exits plus the final layer
(FREE's shallow-deep loss (L_s*CE_s + L*CE_L)/(L_s+L) is the one-exit case).
To keep the extra LM-head work small the intermediate CEs are computed on a
random --exit-frac share of the positions of each step (unbiased estimate).

Data: random 1024-token windows of the tokenized training split (documents
are <s> text </s>, concatenated), and with probability --kr-frac a window
starts with a synthetic key-retrieval sample (keyretrieval.py) of random
length in [64, seq_len].  The batch of step s is a pure function of
(--seed, s), so resuming needs only the step counter.

State lives in --workdir (default /root/tessera-train):
  data/      corpus (build_corpus.py), tokens_{train,eval}.bin (made here)
  tokenizer/ tokenizer.model (train_tokenizer.py)
  ckpt/      ckpt_latest.pt (+ ckpt_prev.pt), written atomically
  train_log.jsonl   one JSON object per log interval / eval
Checkpoints are written every --ckpt-minutes and on SIGTERM/SIGINT.
"""
import argparse
import json
import math
import os
import random
import signal
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from keyretrieval import KeyRetrieval  # noqa: E402

BOS, EOS = 1, 2


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/root/tessera-train")
    # model
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--intermediate", type=int, default=0, help="0: ~2.75*hidden rounded to 64")
    ap.add_argument("--tie", action="store_true", help="tie input embedding and LM head")
    ap.add_argument("--exits", default="2,4,6", help="intermediate exit depths (blocks run)")
    ap.add_argument("--exit-frac", type=float, default=0.25)
    # optimisation
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=8, help="sequences per micro-batch")
    ap.add_argument("--accum", type=int, default=2, help="micro-batches per step")
    ap.add_argument("--steps", type=int, default=4000, help="total optimizer steps")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--kr-frac", type=float, default=0.08)
    ap.add_argument("--kr-answer-weight", type=float, default=1.0,
                    help="loss weight of the key tokens of key-retrieval samples (1: plain CE)")
    ap.add_argument("--bf16", action="store_true", help="CPU autocast to bfloat16")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", default="auto",
                    help="torch threads, or 'auto': switch between 1 and 2 by measured speed "
                         "(2 threads collapse when another process holds a core)")
    # bookkeeping
    ap.add_argument("--resume", action="store_true", help="continue from ckpt/ckpt_latest.pt if present")
    ap.add_argument("--ckpt-minutes", type=float, default=10.0)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--eval-windows", type=int, default=16)
    ap.add_argument("--max-steps-this-run", type=int, default=0, help="stop after N steps (benchmarking)")
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                    help="on --resume, replace a schedule/data setting stored in the checkpoint "
                         f"(one of {', '.join(sorted(OVERRIDABLE))}); repeatable, logged")
    return ap.parse_args(argv)


# settings a resumed run may change (the architecture and optimiser may not)
OVERRIDABLE = {"steps": int, "kr_frac": float, "kr_answer_weight": float}


def apply_overrides(args):
    """Applies --override KEY=VALUE pairs to args; returns {key: value}."""
    done = {}
    for item in args.override:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in OVERRIDABLE:
            raise SystemExit(f"--override {item!r}: expected KEY=VALUE with KEY one of "
                             f"{', '.join(sorted(OVERRIDABLE))}")
        done[key] = OVERRIDABLE[key](value)
        setattr(args, key, done[key])
    return done


# ----------------------------------------------------------------------------- data

def tokenize_split(sp, data_dir, split):
    path = os.path.join(data_dir, f"tokens_{split}.bin")
    if not os.path.exists(path):
        ids = []
        with open(os.path.join(data_dir, f"corpus_{split}.jsonl"), encoding="utf-8") as f:
            for line in f:
                ids.append(BOS)
                ids.extend(sp.encode(json.loads(line)["text"]))
                ids.append(EOS)
        arr = np.asarray(ids, dtype=np.uint16)
        arr.tofile(path + ".tmp")
        os.replace(path + ".tmp", path)
    return np.fromfile(path, dtype=np.uint16)


def load_docs(data_dir, split):
    with open(os.path.join(data_dir, f"corpus_{split}.jsonl"), encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


class Batcher:
    """The micro-batch for (step, micro) is a pure function of (seed, step, micro).

    get() returns (x, y, w): inputs and targets [batch, seq_len] int64, and the
    per-target loss weights [batch, seq_len] float32 (1, or --kr-answer-weight
    on the key tokens of a key-retrieval sample).
    """

    def __init__(self, tokens, sp, docs, args):
        self.tokens = tokens
        self.sp = sp
        self.docs = docs
        self.args = args

    def get(self, step, micro):
        a = self.args
        T = a.seq_len
        rng = np.random.default_rng([a.seed, step, micro])
        kr = KeyRetrieval(self.sp, self.docs, seed=int(rng.integers(1 << 62)))
        out = np.empty((a.batch, T + 1), dtype=np.int64)
        w = np.ones((a.batch, T), dtype=np.float32)
        for b in range(a.batch):
            off = int(rng.integers(0, len(self.tokens) - T - 1))
            row = self.tokens[off: off + T + 1].astype(np.int64)
            if rng.random() < a.kr_frac:
                n = int(rng.integers(64, T + 1))
                ids, ans, _, _ = kr.make_sample(n - 1)
                sample = np.asarray([BOS] + ids + [EOS], dtype=np.int64)[: T + 1]
                row = np.concatenate([sample, row])[: T + 1]
                # ids[ans:] (key digits and closing quote) sit at row[1+ans : n],
                # so they are the targets y[ans : n-1]
                w[b, ans: n - 1] = getattr(a, "kr_answer_weight", 1.0)
            out[b] = row
        x = torch.from_numpy(out)
        return x[:, :-1], x[:, 1:], torch.from_numpy(w)


# ----------------------------------------------------------------------------- model

def build_model(args, vocab_size):
    from transformers import LlamaConfig, LlamaForCausalLM
    inter = args.intermediate or int(round(2.75 * args.hidden / 64) * 64)
    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=args.hidden, intermediate_size=inter,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads, max_position_embeddings=args.seq_len,
        rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=args.tie,
        bos_token_id=BOS, eos_token_id=EOS, hidden_act="silu",
        attn_implementation="sdpa",
    )
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(cfg)
    return model


def weighted_ce(logits, targets, w):
    """Mean CE over positions, weighted by w (None: plain mean)."""
    if w is None:
        return F.cross_entropy(logits.float(), targets)
    nll = F.cross_entropy(logits.float(), targets, reduction="none")
    return (nll * w).sum() / w.sum()


def exit_losses(model, x, y, exits, exit_frac, gen=None, w=None):
    """Returns {depth: CE} for the intermediate exits and the final layer.
    w: optional per-target weights shaped like y."""
    out = model.model(input_ids=x, output_hidden_states=True)
    hs = out.hidden_states  # hs[l] = output of blocks 0..l-1 (hs[L] is already normed)
    L = len(hs) - 1
    losses = {}
    logits = model.lm_head(out.last_hidden_state)
    wf = None if w is None else w.reshape(-1)
    losses[L] = weighted_ce(logits.reshape(-1, logits.size(-1)), y.reshape(-1), wf)
    if exits:
        B, T = y.shape
        if exit_frac < 1.0:
            k = max(1, int(B * T * exit_frac))
            idx = torch.randperm(B * T, generator=gen)[:k]
        else:
            idx = torch.arange(B * T)
        yy = y.reshape(-1)[idx]
        for l in exits:
            h = hs[l].reshape(B * T, -1)[idx]
            lg = model.lm_head(model.model.norm(h))
            losses[l] = weighted_ce(lg, yy, None if wf is None else wf[idx])
    return losses


def weighted_total(losses):
    den = sum(losses.keys())
    return sum(l * v for l, v in losses.items()) / den


@torch.no_grad()
def quick_eval(model, eval_tokens, args, exits, n_windows):
    model.eval()
    T = args.seq_len
    n = min(n_windows, (len(eval_tokens) - 1) // T)
    # fixed, evenly spaced windows over the held-out stream
    starts = np.linspace(0, len(eval_tokens) - T - 1, n).astype(np.int64)
    sums = {}
    for i in range(0, n, 4):
        rows = np.stack([eval_tokens[s: s + T + 1].astype(np.int64) for s in starts[i: i + 4]])
        x = torch.from_numpy(rows)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            ls = exit_losses(model, x[:, :-1], x[:, 1:], exits, 1.0)
        for k, v in ls.items():
            sums[k] = sums.get(k, 0.0) + v.item() * x.shape[0]
    model.train()
    return {str(k): v / n for k, v in sorted(sums.items())}


def make_kr_probe(sp, docs, n=32, length=512, seed=99):
    """Fixed key-retrieval samples from held-out code: (ids [n, length], answer start)."""
    kr = KeyRetrieval(sp, docs, seed=seed)
    rows, starts = [], []
    for _ in range(n):
        ids, ans, _, _ = kr.make_sample(length - 1)
        rows.append([BOS] + ids)
        starts.append(ans + 1)
    return torch.tensor(rows, dtype=torch.int64), starts


@torch.no_grad()
def kr_probe_accuracy(model, probe, args):
    """Final-layer teacher-forced accuracy on the probe: (all key tokens right, per token)."""
    x, starts = probe
    model.eval()
    full = digits = total = 0
    for i in range(0, x.shape[0], 8):
        xb = x[i: i + 8]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            pred = model(input_ids=xb).logits.argmax(-1)
        for r in range(xb.shape[0]):
            a = starts[i + r]
            ok = pred[r, a - 1: xb.shape[1] - 1] == xb[r, a:]
            full += int(ok.all())
            digits += int(ok.sum())
            total += ok.numel()
    model.train()
    return full / x.shape[0], digits / total


# ----------------------------------------------------------------------------- main

def lr_at(step, args):
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    p = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
    return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def save_ckpt(path, model, opt, state, args):
    tmp = path + ".tmp"
    torch.save({
        "model": model.state_dict(),
        "config": model.config.to_dict(),
        "opt": opt.state_dict(),
        "state": state,
        "args": vars(args),
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                "python": random.getstate()},
    }, tmp)
    latest = os.path.join(os.path.dirname(path), "ckpt_latest.pt")
    prev = os.path.join(os.path.dirname(path), "ckpt_prev.pt")
    if os.path.exists(latest):
        os.replace(latest, prev)
    os.replace(tmp, latest)


def main(argv=None):
    args = parse_args(argv)
    auto_threads = args.threads == "auto"
    torch.set_num_threads(2 if auto_threads else int(args.threads))
    import sentencepiece as spm

    data_dir = os.path.join(args.workdir, "data")
    ckpt_dir = os.path.join(args.workdir, "ckpt")
    os.makedirs(ckpt_dir, exist_ok=True)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(args.workdir, "tokenizer", "tokenizer.model"))
    train_tokens = tokenize_split(sp, data_dir, "train")
    eval_tokens = tokenize_split(sp, data_dir, "eval")
    print(f"train tokens {len(train_tokens)}, eval tokens {len(eval_tokens)}", flush=True)

    exits = [int(e) for e in args.exits.split(",") if e.strip()] if args.exits else []
    latest = os.path.join(ckpt_dir, "ckpt_latest.pt")
    ck = None
    if args.resume and not os.path.exists(latest) and os.path.exists(os.path.join(ckpt_dir, "ckpt_prev.pt")):
        latest = os.path.join(ckpt_dir, "ckpt_prev.pt")  # killed between the two renames
    if args.resume and os.path.exists(latest):
        ck = torch.load(latest, map_location="cpu", weights_only=False)
        # the architecture and schedule come from the checkpoint; runtime knobs from the CLI
        keep = {"workdir", "resume", "ckpt_minutes", "log_every", "eval_every", "eval_windows",
                "max_steps_this_run", "no_save", "threads", "override"}
        for k, v in ck["args"].items():
            if k not in keep:
                setattr(args, k, v)
        exits = [int(e) for e in args.exits.split(",") if e.strip()] if args.exits else []
    overrides = apply_overrides(args)

    model = build_model(args, sp.get_piece_size())
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    state = {"step": 0, "tokens": 0, "train_seconds": 0.0}
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        state = ck["state"]
        torch.set_rng_state(ck["rng"]["torch"])
        np.random.set_state(ck["rng"]["numpy"])
        random.setstate(ck["rng"]["python"])
        print(f"resumed from step {state['step']} ({state['tokens']} tokens)", flush=True)
        del ck
    print(f"model params {n_params} ({n_params/1e6:.2f} M), exits {exits}, config "
          f"{json.dumps({k: model.config.to_dict()[k] for k in ('hidden_size','intermediate_size','num_hidden_layers','num_attention_heads','num_key_value_heads','vocab_size','tie_word_embeddings')})}",
          flush=True)

    batcher = Batcher(train_tokens, sp, load_docs(data_dir, "train"), args)
    kr_probe = make_kr_probe(sp, load_docs(data_dir, "eval"))
    log_path = os.path.join(args.workdir, "train_log.jsonl")
    log_f = open(log_path, "a") if not args.no_save else None

    def log(obj):
        line = json.dumps(obj)
        print(line, flush=True)
        if log_f:
            log_f.write(line + "\n")
            log_f.flush()

    stop = {"flag": False}

    def on_signal(signum, frame):
        stop["flag"] = True
        print(f"signal {signum}: will checkpoint and exit", flush=True)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    log({"event": "start", "step": state["step"], "params": n_params, "args": vars(args),
         "overrides": overrides,
         "torch": torch.__version__, "time": time.time()})
    model.train()
    gen = torch.Generator()
    last_ckpt = time.time()
    acc = {}
    acc_n = 0
    t_log = time.time()
    tok_log = 0
    steps_this_run = 0
    speed = {}  # threads -> EMA of tokens/s (auto threads)
    cur_threads = torch.get_num_threads()

    def checkpoint():
        if not args.no_save:
            save_ckpt(os.path.join(ckpt_dir, "ckpt.pt"), model, opt, state, args)
            log({"event": "ckpt", "step": state["step"], "tokens": state["tokens"], "time": time.time()})

    while state["step"] < args.steps and not stop["flag"]:
        step = state["step"]
        t0 = time.time()
        lr = lr_at(step, args)
        for g in opt.param_groups:
            g["lr"] = lr
        gen.manual_seed(args.seed * 1000003 + step)
        opt.zero_grad(set_to_none=True)
        for m in range(args.accum):
            x, y, w = batcher.get(step, m)
            if args.kr_answer_weight == 1.0:
                w = None  # plain mean CE, bit for bit as before the option existed
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                losses = exit_losses(model, x, y, exits, args.exit_frac, gen, w)
            loss = weighted_total(losses) / args.accum
            loss.backward()
            for k, v in losses.items():
                acc[k] = acc.get(k, 0.0) + v.item() / args.accum
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip).item()
        opt.step()
        dt = time.time() - t0
        ntok = args.batch * args.accum * args.seq_len
        state["step"] += 1
        state["tokens"] += ntok
        state["train_seconds"] += dt
        acc_n += 1
        tok_log += ntok
        steps_this_run += 1
        if auto_threads:
            th = torch.get_num_threads()
            r = ntok / dt
            speed[th] = r if th not in speed else 0.5 * speed[th] + 0.5 * r
            if th != cur_threads or len(speed) < 2:  # just explored: pick the faster
                if len(speed) == 2:
                    cur_threads = max(speed, key=speed.get)
                nxt = cur_threads if len(speed) == 2 else 3 - th
            elif state["step"] % 20 == 0:
                nxt = 3 - cur_threads  # explore the other setting for one step
            else:
                nxt = cur_threads
            torch.set_num_threads(nxt)

        if state["step"] % args.log_every == 0 or state["step"] == args.steps:
            now = time.time()
            log({"step": state["step"], "tokens": state["tokens"],
                 "loss": {str(k): round(v / acc_n, 4) for k, v in sorted(acc.items())},
                 "lr": lr, "gnorm": round(gnorm, 3), "tok_s": round(tok_log / (now - t_log), 1),
                 "threads": torch.get_num_threads(),
                 "train_seconds": round(state["train_seconds"], 1), "time": now})
            acc, acc_n, t_log, tok_log = {}, 0, now, 0
        if args.eval_every and (state["step"] % args.eval_every == 0 or state["step"] == args.steps):
            ev = quick_eval(model, eval_tokens, args, exits, args.eval_windows)
            kr_full, kr_tok = kr_probe_accuracy(model, kr_probe, args)
            log({"event": "eval", "step": state["step"], "tokens": state["tokens"],
                 "eval_loss": {k: round(v, 4) for k, v in ev.items()},
                 "kr512": {"key_acc": round(kr_full, 3), "token_acc": round(kr_tok, 3)},
                 "time": time.time()})
            t_log = time.time()
        if time.time() - last_ckpt > args.ckpt_minutes * 60:
            checkpoint()
            last_ckpt = time.time()
            t_log = time.time()
        if args.max_steps_this_run and steps_this_run >= args.max_steps_this_run:
            break

    checkpoint()
    if state["step"] >= args.steps:
        log({"event": "done", "step": state["step"], "tokens": state["tokens"], "time": time.time()})


if __name__ == "__main__":
    main()
