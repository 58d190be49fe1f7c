#!/usr/bin/env python3
"""Train the SentencePiece BPE tokenizer on the training split of the corpus.

Llama conventions: unk=0, bos=1, eos=2, no pad (-1); byte_fallback so that any
byte sequence is representable.  Code needs whitespace to round-trip exactly,
so: normalization rule "identity", remove_extra_whitespaces=false,
add_dummy_prefix=false, allow_whitespace_only_pieces=true, split_digits=true.

SentencePiece's trainer normally reads one sentence per line, which would make
"\\n" unlearnable.  We instead feed it multi-line "sentences" (blocks of code
split at blank lines, at most --max-chars characters) through
``sentence_iterator``, so newlines and newline+indent sequences are ordinary
characters of the training text.  "\\n" and "\\t" are also forced into the
character set (required_chars), so they never need byte fallback.

After training, the script verifies decode(encode(text)) == text on every
held-out file and writes the result to <out>/tokenizer_roundtrip.json.
"""
import argparse
import json
import os
import random

import sentencepiece as spm

DATA = "/root/tessera-train/data"


def blocks(text, max_chars):
    """Split a file into chunks at blank lines, each at most max_chars."""
    out, cur = [], ""
    for para in text.split("\n\n"):
        para = para + "\n\n"
        if len(cur) + len(para) > max_chars and cur:
            out.append(cur)
            cur = ""
        while len(para) > max_chars:
            out.append(para[:max_chars])
            para = para[max_chars:]
        cur += para
    if cur:
        out.append(cur)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--out", default="/root/tessera-train/tokenizer")
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--max-chars", type=int, default=2000)
    ap.add_argument("--max-sentences", type=int, default=60000,
                    help="random subsample of blocks fed to the trainer (seeded)")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()

    os.makedirs(args.out, exist_ok=True)
    sents = []
    with open(os.path.join(args.data, "corpus_train.jsonl"), encoding="utf-8") as f:
        for line in f:
            sents.extend(blocks(json.loads(line)["text"], args.max_chars))
    rng = random.Random(args.seed)
    rng.shuffle(sents)
    sents = sents[: args.max_sentences]
    print(f"training on {len(sents)} blocks, {sum(map(len, sents))} chars", flush=True)

    prefix = os.path.join(args.out, "tokenizer")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sents),
        model_prefix=prefix,
        model_type="bpe",
        vocab_size=args.vocab_size,
        character_coverage=0.9995,
        byte_fallback=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        normalization_rule_name="identity",
        required_chars="\n\t",
        max_sentence_length=4 * args.max_chars + 16,
        split_by_whitespace=True,
        max_sentencepiece_length=16,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        num_threads=2,
        minloglevel=1,
    )

    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    ok, bad, ntok, nchar = 0, [], 0, 0
    with open(os.path.join(args.data, "corpus_eval.jsonl"), encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            ids = sp.encode(d["text"])
            ntok += len(ids)
            nchar += len(d["text"])
            if sp.decode(ids) == d["text"]:
                ok += 1
            else:
                bad.append(d["path"])
    res = {"vocab_size": sp.get_piece_size(), "eval_files": ok + len(bad),
           "roundtrip_exact": ok, "roundtrip_failed": bad,
           "eval_tokens": ntok, "eval_chars": nchar, "chars_per_token": nchar / max(ntok, 1),
           "newline_id": sp.piece_to_id("\n"), "tab_id": sp.piece_to_id("\t")}
    with open(os.path.join(args.out, "tokenizer_roundtrip.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
