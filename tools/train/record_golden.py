#!/usr/bin/env python3
"""Records transformers' reference outputs for the exported embedded model, for Tessera's golden
test (tests/golden/golden_transformers_test.cc): for three code prompts, the logits of every
position computed in float32 on the bf16 weights (`prompt{i}.logits_fp32compute`) and in bf16
(`prompt{i}.logits`), and 32 greedy tokens of the float32 computation (`prompt{i}.greedy`).
Run it after every export:

  python3 tools/train/record_golden.py --model models/tessera-code-tiny
"""
import argparse
import os

import sentencepiece as spm
import torch
from safetensors.torch import save_file
from transformers import LlamaForCausalLM

PROMPTS = [
    "",
    "import os\n\n\ndef list_files(root):\n    ",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n",
]


@torch.no_grad()
def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="models/tessera-code-tiny")
    a = p.parse_args()
    torch.manual_seed(0)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(a.model, "tokenizer.model"))
    bf16 = LlamaForCausalLM.from_pretrained(a.model, torch_dtype=torch.bfloat16,
                                            attn_implementation="eager").eval()
    fp32 = LlamaForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32,
                                            attn_implementation="eager").eval()
    tensors = {}
    for i, text in enumerate(PROMPTS):
        ids = [bf16.config.bos_token_id] + sp.encode(text)
        x = torch.tensor([ids])
        tensors[f"prompt{i}.input_ids"] = torch.tensor(ids, dtype=torch.int32)
        tensors[f"prompt{i}.logits_fp32compute"] = fp32(x).logits[0].float().contiguous()
        tensors[f"prompt{i}.logits"] = bf16(x).logits[0].float().contiguous()
        seq, gaps = list(ids), []
        for _ in range(32):
            last = fp32(torch.tensor([seq])).logits[0, -1]
            top = torch.topk(last, 2).values
            gaps.append(float(top[0] - top[1]))
            seq.append(int(torch.argmax(last)))
        tensors[f"prompt{i}.greedy"] = torch.tensor(seq[len(ids):], dtype=torch.int32)
        print(f"prompt {i}: {len(ids)} tokens, min greedy top-2 gap {min(gaps):.4g}")
    save_file(tensors, os.path.join(a.model, "golden.safetensors"), metadata={"format": "pt"})


if __name__ == "__main__":
    main()
