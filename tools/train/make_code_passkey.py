#!/usr/bin/env python3
"""Key-retrieval samples in the embedded model's own format, for `tessera eval`'s passkey task.

Writes JSONL records {"prompt", "answer", "length", "depth"} (the passkey task's `data` format):
held-out stdlib code of about `length` tokens with a line `NAME = "48213"` placed after the
fraction `depth` of the filler lines, ending with `assert NAME == "`; the task scores the first
number of the greedy continuation against the key. The filler comes only from the held-out
files (corpus_eval.jsonl), so no sample was seen in training. Names and the digit format are
those of keyretrieval.py; unlike training, where the key sits in the first 10 % of the filler,
every depth from the start to the end is covered.

    python3 tools/train/make_code_passkey.py --out configs/tasks/data/code_passkey.jsonl
"""
import argparse
import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from keyretrieval import KEY_DIGITS, NAMES  # noqa: E402


def sample(sp, docs, rng, length, depth):
    """One record with the key at `depth`: BOS, the prompt and the task's KEY_DIGITS + 4 new
    tokens fit in `length` tokens."""
    name = rng.choice(NAMES)
    key = "".join(rng.choice("0123456789") for _ in range(KEY_DIGITS))
    key_line = f'{name} = "{key}"\n'
    query = f'assert {name} == "'
    # consecutive lines of one held-out file (another one appended when it runs out)
    lines = []
    while sum(len(ln) for ln in lines) < 4 * length:
        doc = rng.choice(docs).split("\n")
        start = rng.randrange(len(doc))
        lines += [ln + "\n" for ln in doc[start:]]

    def build(n_lines):
        filler = lines[:n_lines]
        at = round(depth * len(filler))
        return "".join(filler[:at]) + key_line + "".join(filler[at:]) + query

    budget = length - 1 - (KEY_DIGITS + 4)
    lo, hi = 0, len(lines)  # the most lines whose prompt fits in the budget
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(sp.encode(build(mid))) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return {"prompt": build(lo), "answer": key, "length": length, "depth": depth}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/root/tessera-train")
    ap.add_argument("--tokenizer", default=os.path.join(REPO, "models", "tessera-code-tiny",
                                                        "tokenizer.model"))
    ap.add_argument("--out", default=os.path.join(REPO, "configs", "tasks", "data",
                                                  "code_passkey.jsonl"))
    ap.add_argument("--lengths", default="256,512,1024")
    ap.add_argument("--depths", default="0,0.25,0.5,0.75,1")
    ap.add_argument("--per-cell", type=int, default=4)
    ap.add_argument("--seed", type=int, default=4242)
    args = ap.parse_args()
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=args.tokenizer)
    with open(os.path.join(args.workdir, "data", "corpus_eval.jsonl"), encoding="utf-8") as f:
        docs = [d for d in (json.loads(line)["text"] for line in f) if d.count("\n") > 20]
    rng = random.Random(args.seed)
    records = []
    for length in (int(x) for x in args.lengths.split(",")):
        for depth in (float(x) for x in args.depths.split(",")):
            for _ in range(args.per_cell):
                records.append(sample(sp, docs, rng, length, depth))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    print(f"wrote {len(records)} samples to {args.out}")


if __name__ == "__main__":
    main()
