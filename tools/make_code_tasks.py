#!/usr/bin/env python3
"""Evaluation data from the embedded model's held-out code (models/tessera-code-tiny).

Reads the 97 held-out standard-library files listed in tools/train/corpus_manifest.json (from
the interpreter named there) and writes, into configs/tasks/data/:

  code_next_line.jsonl      multiple choice {"context", "choices", "gold", "path", "line"}: the
                            8 lines before a line of a held-out file, the true next line and 3
                            lines with the same indentation from other held-out files;
  code_next_line_gen.jsonl  generation {"prompt", "target", "path", "line"}: the 12 lines before
                            a line and that line (the task stops at the first newline);
  code_files.jsonl          whole files {"text", "path"} of 2,500 to 9,000 characters, for
                            rolling-window perplexity (several 1,023-token windows each);
  code_calibration.jsonl    24 whole files {"text", "path"} of 2,500 to 9,000 characters from
                            the TRAINING split (calibration data, as the reference calibrates
                            on train splits: `tessera calibrate --data`).

The same lines and files come out on every run (seeded; files sorted by path). Used by the
`tessera eval` presets configs/tasks/code_*.textproto and the lm-evaluation-harness tasks in
configs/lm_eval/.

    python3 tools/make_code_tasks.py [--out configs/tasks/data]
"""
import argparse
import json
import os
import random

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST = os.path.join(REPO, "tools", "train", "corpus_manifest.json")


def indentation(line):
    return line[: len(line) - len(line.lstrip(" \t"))]


def candidate_lines(lines, first):
    """Indices of lines worth predicting: not blank, at least 12 characters of code, not a
    comment, at or after `first`."""
    out = []
    for i in range(first, len(lines)):
        body = lines[i].strip()
        if len(body) >= 12 and not body.startswith("#"):
            out.append(i)
    return out


def next_line_questions(files, rng, count, context_lines):
    by_indent = {}
    for path, lines in files:
        for i in candidate_lines(lines, 0):
            by_indent.setdefault(indentation(lines[i]), []).append((path, lines[i]))
    questions = []
    while len(questions) < count:
        path, lines = rng.choice(files)
        picks = candidate_lines(lines, context_lines)
        if not picks:
            continue
        i = rng.choice(picks)
        true_line = lines[i]
        pool = [l for p, l in by_indent.get(indentation(true_line), []) if p != path
                and l != true_line and abs(len(l) - len(true_line)) <= len(true_line) // 2]
        if len(set(pool)) < 3:
            continue
        distractors = rng.sample(sorted(set(pool)), 3)
        choices = distractors + [true_line]
        rng.shuffle(choices)
        questions.append({"context": "\n".join(lines[i - context_lines:i]) + "\n",
                          "choices": choices, "gold": choices.index(true_line),
                          "path": path, "line": i + 1})
    return questions


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(REPO, "configs", "tasks", "data"))
    parser.add_argument("--seed", type=int, default=20261207)
    args = parser.parse_args()
    manifest = json.load(open(MANIFEST))
    files = []
    for rel in sorted(manifest["eval_files"]):
        with open(os.path.join(manifest["stdlib_root"], rel), encoding="utf-8") as f:
            files.append((rel, f.read()))
    split = [(path, text.split("\n")) for path, text in files]
    rng = random.Random(args.seed)
    os.makedirs(args.out, exist_ok=True)

    def write(name, records):
        with open(os.path.join(args.out, name), "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        print(f"{name}: {len(records)} records")

    write("code_next_line.jsonl", next_line_questions(split, rng, 100, 8))
    generation = []
    while len(generation) < 24:
        path, lines = rng.choice(split)
        picks = candidate_lines(lines, 12)
        if picks:
            i = rng.choice(picks)
            generation.append({"prompt": "\n".join(lines[i - 12:i]) + "\n", "target": lines[i],
                               "path": path, "line": i + 1})
    write("code_next_line_gen.jsonl", generation)
    whole = [{"text": text, "path": path} for path, text in files if 2500 <= len(text) <= 9000]
    write("code_files.jsonl", whole[:20])
    train = []
    for rel in sorted(manifest["train_files"]):
        with open(os.path.join(manifest["stdlib_root"], rel), encoding="utf-8") as f:
            text = f.read()
        if 2500 <= len(text) <= 9000:
            train.append({"text": text, "path": rel})
    write("code_calibration.jsonl", random.Random(args.seed + 1).sample(train, 24))


if __name__ == "__main__":
    main()
