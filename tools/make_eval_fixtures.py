#!/usr/bin/env python3
"""Writes small evaluation datasets and transformers' reference figures for them.

For the fixture model tests/fixtures/models/llama2_mha (random weights, SentencePiece tokenizer)
it records, computed by Hugging Face transformers in float32:
  - multiple choice: the log-likelihood and is_greedy of every (context, choice) pair, and acc /
    acc_norm as lm-evaluation-harness computes them (acc_norm divides by the choice's length in
    characters);
  - perplexity: total negative log-likelihood, token count and perplexity of each text of the
    perplexity set, with the sliding window of the transformers perplexity guide, for two
    (window, stride) settings.
Tokenization follows lm-evaluation-harness: trailing spaces of a context move to the
continuation; continuation ids are encode(context + continuation) past encode(context); a BOS is
prepended to every context.

  python3 tools/make_eval_fixtures.py --out tests/fixtures/eval
"""
import argparse
import json
import math
import os

import sentencepiece as spm
import torch
from transformers import LlamaForCausalLM

MODEL = "tests/fixtures/models/llama2_mha"

MC = [
    {"context": "Question: Which keyword defines a function in Python?\nAnswer:",
     "choices": [" def", " func", " lambda x", " function"], "gold": 0},
    {"context": "Question: What does len([1, 2, 3]) return?\nAnswer:",
     "choices": [" 3", " 6", " [1, 2, 3]"], "gold": 0},
    {"context": "import os\nprint(os.path.",
     "choices": ["join('a', 'b'))", "split('a/b'))"], "gold": 1},
    {"context": "The capital of France is ",
     "choices": ["Paris", "Berlin", "Madrid", "Rome"], "gold": 0},
    {"context": "for i in range(10):\n    ",
     "choices": ["print(i)", "return", "pass  # nothing to do here"], "gold": 2},
    {"context": "Le café est très",
     "choices": [" bon.", " chaud et noir.", " cher"], "gold": 1},
]

TEXTS = [
    {"text": ("def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"
              "    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n\n\n"
              "class Stack:\n    def __init__(self):\n        self.items = []\n\n"
              "    def push(self, item):\n        self.items.append(item)\n\n"
              "    def pop(self):\n        return self.items.pop()\n") * 2},
    {"text": ("The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor "
              "jugs. Über den Wolken muss die Freiheit wohl grenzenlos sein. 12345 67890.\n") * 3},
]

SETTINGS = [(64, 32), (48, 48)]


def encode_pair(sp, context, continuation):
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = sp.encode(context + continuation)
    ctx = sp.encode(context)
    return ctx, whole[len(ctx):]


@torch.no_grad()
def continuation_logprobs(model, ids, n_ctx):
    """Per-token log-probs of ids[n_ctx:] given what precedes, and whether each was the argmax."""
    logits = model(torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    out, greedy = [], True
    for pos in range(n_ctx, len(ids)):
        row = logp[pos - 1]
        out.append(row[ids[pos]].item())
        greedy = greedy and int(torch.argmax(logits[pos - 1])) == ids[pos]
    return out, greedy


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(0)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(MODEL, "tokenizer.model"))
    model = LlamaForCausalLM.from_pretrained(MODEL, torch_dtype=torch.float32,
                                             attn_implementation="eager").eval()
    bos = model.config.bos_token_id

    with open(os.path.join(a.out, "multiple_choice.jsonl"), "w") as f:
        for item in MC:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
    with open(os.path.join(a.out, "perplexity.jsonl"), "w") as f:
        for item in TEXTS:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")

    mc = []
    acc = acc_norm = 0
    for item in MC:
        lls, greedy = [], []
        for choice in item["choices"]:
            ctx, cont = encode_pair(sp, item["context"], choice)
            ids = [bos] + ctx + cont
            lp, g = continuation_logprobs(model, ids, 1 + len(ctx))
            lls.append(sum(lp))
            greedy.append(g)
        lens = [float(len(c)) for c in item["choices"]]
        pred = max(range(len(lls)), key=lambda i: lls[i])
        pred_norm = max(range(len(lls)), key=lambda i: lls[i] / lens[i])
        acc += pred == item["gold"]
        acc_norm += pred_norm == item["gold"]
        mc.append({"loglikelihoods": lls, "is_greedy": greedy, "pred": pred, "pred_norm": pred_norm})
    n = len(MC)

    ppl = []
    for window, stride in SETTINGS:
        per_text = []
        for item in TEXTS:
            ids = [bos] + sp.encode(item["text"])
            nll, count, prev_end = 0.0, 0, 0
            for begin in range(0, len(ids), stride):
                end = min(begin + window, len(ids))
                first_target = max(prev_end, begin + 1)
                lp, _ = continuation_logprobs(model, ids[begin:end], first_target - begin)
                nll -= sum(lp)
                count += len(lp)
                prev_end = end
                if end == len(ids):
                    break
            per_text.append({"nll": nll, "tokens": count, "perplexity": math.exp(nll / count)})
        total_nll = sum(t["nll"] for t in per_text)
        total_tokens = sum(t["tokens"] for t in per_text)
        ppl.append({"window": window, "stride": stride, "texts": per_text, "nll": total_nll,
                    "tokens": total_tokens, "perplexity": math.exp(total_nll / total_tokens)})

    reference = {
        "model": MODEL,
        "multiple_choice": {"samples": mc, "acc": acc / n, "acc_norm": acc_norm / n},
        "perplexity": ppl,
        "tool": "tools/make_eval_fixtures.py",
    }
    with open(os.path.join(a.out, "reference_llama2_mha.json"), "w") as f:
        json.dump(reference, f, indent=1)
    print(json.dumps({"acc": acc / n, "acc_norm": acc_norm / n,
                      "ppl": [(s["window"], s["stride"], s["perplexity"], s["tokens"]) for s in ppl]}))


if __name__ == "__main__":
    main()
