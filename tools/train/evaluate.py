#!/usr/bin/env python3
"""Held-out evaluation of an exported model with transformers (CPU).

Measured on the held-out stdlib files (corpus_eval.jsonl, see
corpus_manifest.json), tokenized with the shipped tokenizer.model as
<s> text </s> per file, concatenated, cut into non-overlapping windows of
max_position_embeddings tokens (the last partial window is kept):

  * per exit (every trained exit and the final layer): mean next-token CE,
    perplexity, next-token accuracy (argmax), agreement of the exit's argmax
    with the final layer's argmax, mean top-2 probability gap (the runtime's
    confidence).  Exit logits = lm_head(model.norm(hidden_states[l])).
  * bigram baseline on the same (previous token, target) pairs: counts from
    the training-split tokens with add-k smoothing; reported for several k,
    the best one (chosen on the held-out set, i.e. flattering the baseline)
    is the headline.
  * key retrieval: fresh samples (keyretrieval.py, fixed seed, filler from
    the held-out files) of exactly 256 / 512 / 1024 tokens including <s>;
    a sample counts as correct when every digit of the key is the argmax
    under teacher forcing, which equals greedy decoding reproducing the key.
  * greedy example completions for a few prompts.
Writes <model>/eval.json and <model>/loss_curve.png (from train_log.jsonl).
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from keyretrieval import KeyRetrieval, KEY_DIGITS  # noqa: E402

PROMPTS = [
    "def fibonacci(n):\n",
    "import os\n\n\ndef list_python_files(path):\n    \"\"\"Return the .py files under path.\"\"\"\n",
    "class Stack:\n    \"\"\"A simple LIFO stack.\"\"\"\n\n    def __init__(self):\n",
    "    def test_split(self):\n        self.assertEqual(",
    "if __name__ == \"__main__\":\n",
]


def exit_logits(model, x, exits):
    out = model.model(input_ids=x, output_hidden_states=True)
    hs = out.hidden_states
    L = len(hs) - 1
    res = {}
    for l in exits:
        res[l] = model.lm_head(model.model.norm(hs[l])).float()
    res[L] = model.lm_head(out.last_hidden_state).float()
    return res


def tokens_of(sp, data_dir, split):
    ids = []
    with open(os.path.join(data_dir, f"corpus_{split}.jsonl"), encoding="utf-8") as f:
        for line in f:
            ids.append(1)
            ids.extend(sp.encode(json.loads(line)["text"]))
            ids.append(2)
    return np.asarray(ids, dtype=np.int64)


@torch.no_grad()
def heldout(model, toks, T, exits, batch):
    L = model.config.num_hidden_layers
    keys = list(exits) + [L]
    stats = {l: {"nll": 0.0, "correct": 0, "agree": 0, "gap": 0.0} for l in keys}
    n = 0
    starts = list(range(0, len(toks) - 1, T))
    prev_all, tgt_all = [], []
    for i in range(0, len(starts), batch):
        rows = [toks[s: s + T + 1] for s in starts[i: i + batch]]
        # the ragged last window runs alone
        groups = [rows] if len({len(r) for r in rows}) == 1 else [[r] for r in rows]
        for g in groups:
            x = torch.from_numpy(np.stack(g))
            inp, tgt = x[:, :-1], x[:, 1:]
            lg = exit_logits(model, inp, exits)
            final_arg = lg[L].argmax(-1)
            for l in keys:
                lp = F.log_softmax(lg[l], -1)
                stats[l]["nll"] -= lp.gather(-1, tgt.unsqueeze(-1)).sum().item()
                arg = lp.argmax(-1)
                stats[l]["correct"] += (arg == tgt).sum().item()
                stats[l]["agree"] += (arg == final_arg).sum().item()
                top2 = lp.exp().topk(2, -1).values
                stats[l]["gap"] += (top2[..., 0] - top2[..., 1]).sum().item()
            n += tgt.numel()
            prev_all.append(inp.reshape(-1).numpy())
            tgt_all.append(tgt.reshape(-1).numpy())
    out = {}
    for l in keys:
        s = stats[l]
        ce = s["nll"] / n
        out[str(l)] = {"loss": ce, "ppl": math.exp(ce), "acc": s["correct"] / n,
                       "agree_with_final": s["agree"] / n, "mean_top2_gap": s["gap"] / n}
    return out, n, np.concatenate(prev_all), np.concatenate(tgt_all)


def bigram(train_toks, prev, tgt, V, ks=(1.0, 0.1, 0.01, 0.001)):
    counts = np.bincount(train_toks[:-1] * V + train_toks[1:], minlength=V * V).reshape(V, V)
    counts = counts.astype(np.float64)
    row = counts.sum(1)
    res = {}
    for k in ks:
        p = (counts[prev, tgt] + k) / (row[prev] + k * V)
        ce = float(-np.log(p).mean())
        res[str(k)] = {"loss": ce, "ppl": math.exp(ce)}
    # accuracy of the bigram argmax (independent of k)
    acc = float((counts.argmax(1)[prev] == tgt).mean())
    best = min(res, key=lambda k: res[k]["loss"])
    return {"by_k": res, "best_k": float(best), "loss": res[best]["loss"], "ppl": res[best]["ppl"],
            "acc": acc}


@torch.no_grad()
def key_retrieval(model, sp, docs, exits, lengths, n, seed, batch):
    L = model.config.num_hidden_layers
    keys = list(exits) + [L]
    res = {}
    for length in lengths:
        kr = KeyRetrieval(sp, docs, seed=seed + length)
        samples = []
        for _ in range(n):
            ids, a, key, name = kr.make_sample(length - 1)
            samples.append(([1] + ids, a + 1))
        full = {l: 0 for l in keys}
        digit = {l: 0 for l in keys}
        for i in range(0, n, batch):
            chunk = samples[i: i + batch]
            x = torch.tensor([s[0] for s in chunk])
            lg = exit_logits(model, x, exits)
            for l in keys:
                pred = lg[l].argmax(-1)
                for j, (ids, a) in enumerate(chunk):
                    # positions a..a+KEY_DIGITS-1 hold the digits; predicted from position-1
                    want = x[j, a: a + KEY_DIGITS]
                    got = pred[j, a - 1: a - 1 + KEY_DIGITS]
                    ok = (want == got)
                    digit[l] += ok.sum().item()
                    full[l] += int(ok.all().item())
        res[str(length)] = {str(l): {"acc": full[l] / n, "digit_acc": digit[l] / (n * KEY_DIGITS)}
                            for l in keys}
        res[str(length)]["n"] = n
    return res


@torch.no_grad()
def completions(model, sp, prompts, max_new):
    out = []
    for p in prompts:
        ids = [1] + sp.encode(p)
        x = torch.tensor([ids])
        g = model.generate(x, max_new_tokens=max_new, do_sample=False, eos_token_id=2,
                           pad_token_id=2)
        new = g[0, len(ids):].tolist()
        if 2 in new:
            new = new[: new.index(2)]
        out.append({"prompt": p, "completion": sp.decode(new)})
    return out


def loss_curve(log_path, png, exits, L, max_step=None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tr, ev = [], []
    with open(log_path) as f:
        for line in f:
            d = json.loads(line)
            if "loss" in d and "event" not in d:
                tr.append(d)
            elif d.get("event") == "eval":
                ev.append(d)
    # a resumed run may re-log steps: keep the last record per step
    tr = [d for d in {d["step"]: d for d in tr}.values() if max_step is None or d["step"] <= max_step]
    ev = [d for d in {d["step"]: d for d in ev}.values() if max_step is None or d["step"] <= max_step]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, l in enumerate(list(exits) + [L]):
        c = colors[i % len(colors)]
        xs = [d["tokens"] / 1e6 for d in tr if str(l) in d["loss"]]
        ys = [d["loss"][str(l)] for d in tr if str(l) in d["loss"]]
        name = "final" if l == L else f"exit {l}"
        ax.plot(xs, ys, color=c, alpha=0.35, lw=0.8)
        ax.plot([d["tokens"] / 1e6 for d in ev], [d["eval_loss"][str(l)] for d in ev],
                color=c, lw=1.8, marker="o", ms=2.5, label=f"{name} ({l} blocks)")
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("train (thin) and held-out (bold) loss per exit")
    lows = [v for d in ev for v in d["eval_loss"].values()] + \
        [v for d in tr for v in d["loss"].values()]
    if lows:
        ax.set_ylim(min(lows) - 0.1, min(max(lows), min(lows) + 3.0))

    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(REPO, "models", "tessera-code-tiny"))
    ap.add_argument("--workdir", default="/root/tessera-train")
    ap.add_argument("--kr-n", type=int, default=200, help="key-retrieval samples per length")
    ap.add_argument("--kr-seed", type=int, default=777000)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-windows", type=int, default=0, help="0: all held-out windows")
    ap.add_argument("--max-new", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import sentencepiece as spm
    from transformers import LlamaForCausalLM

    t0 = time.time()
    sp = spm.SentencePieceProcessor(model_file=os.path.join(args.model, "tokenizer.model"))
    # the shipped bf16 weights, computed in fp32
    model = LlamaForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.eval()
    cfg = json.load(open(os.path.join(args.model, "config.json")))
    exits = cfg.get("tessera_exit_layers", [])
    L = cfg["num_hidden_layers"]
    T = cfg["max_position_embeddings"]
    data_dir = os.path.join(args.workdir, "data")

    ev_toks = tokens_of(sp, data_dir, "eval")
    if args.max_windows:
        ev_toks = ev_toks[: args.max_windows * T + 1]
    tr_toks = tokens_of(sp, data_dir, "train")
    per_exit, n_tok, prev, tgt = heldout(model, ev_toks, T, exits, args.batch)
    print("held-out", json.dumps(per_exit), flush=True)
    bg = bigram(tr_toks, prev, tgt, sp.get_piece_size())
    print("bigram", json.dumps(bg), flush=True)
    docs = []
    with open(os.path.join(data_dir, "corpus_eval.jsonl"), encoding="utf-8") as f:
        docs = [json.loads(line)["text"] for line in f]
    kr = key_retrieval(model, sp, docs, exits, [256, 512, 1024], args.kr_n, args.kr_seed,
                       args.batch)
    print("key retrieval", json.dumps(kr), flush=True)
    comps = completions(model, sp, PROMPTS, args.max_new)

    ts = {}
    tsp = os.path.join(args.model, "training_state.json")
    if os.path.exists(tsp):
        ts = json.load(open(tsp))
    result = {
        "model": os.path.basename(os.path.abspath(args.model)),
        "step": ts.get("step"), "total_steps": ts.get("total_steps"), "interim": ts.get("interim"),
        "train_tokens_seen": ts.get("tokens"), "train_cpu_seconds": ts.get("train_cpu_seconds"),
        "exits": exits, "num_hidden_layers": L, "context": T,
        "heldout_tokens": n_tok, "heldout": per_exit, "bigram": bg,
        "key_retrieval": kr, "completions": comps,
        "tokenizer_roundtrip": json.load(open(os.path.join(args.workdir, "tokenizer",
                                                           "tokenizer_roundtrip.json"))),
        "torch": torch.__version__, "transformers": __import__("transformers").__version__,
        "eval_seconds": round(time.time() - t0, 1),
    }
    with open(os.path.join(args.model, "eval.json"), "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    loss_curve(os.path.join(args.workdir, "train_log.jsonl"),
               os.path.join(args.model, "loss_curve.png"), exits, L, ts.get("step"))
    print(f"wrote {args.model}/eval.json and loss_curve.png in {time.time()-t0:.0f}s")


if __name__ == "__main__":
    main()
