#!/usr/bin/env python3
"""Synthetic key-retrieval samples embedded in real code.

A sample looks like this (everything but the key line and the query line is
real stdlib code taken from consecutive lines of a random corpus file):

    <0-10% of the filler>
    SECRET_KEY = "48213"
    <rest of the filler code ...>
    assert SECRET_KEY == "48213"
                          ^^^^^^ the continuation the model must produce

The name is drawn from NAMES, the key is KEY_DIGITS random decimal digits
(the tokenizer splits digits, so the answer is KEY_DIGITS single-digit tokens
followed by '"').  ``make_sample`` returns token ids of exactly ``length``
tokens (no BOS) whose last ``len(answer)`` tokens are the answer, plus the
index where the answer starts.
"""
import random

NAMES = ["SECRET_KEY", "PASSKEY", "API_TOKEN", "MAGIC_NUMBER", "ACCESS_CODE",
         "PIN_CODE", "SESSION_ID", "LICENSE_KEY", "UNLOCK_CODE", "VAULT_KEY"]
KEY_DIGITS = 5


class KeyRetrieval:
    def __init__(self, sp, docs, seed=0):
        """sp: SentencePieceProcessor; docs: list of source texts used as filler."""
        self.sp = sp
        self.docs = [d for d in docs if d.count("\n") > 20]
        self.rng = random.Random(seed)

    def _filler_lines(self, n_tokens):
        """Consecutive lines from random docs, about n_tokens tokens in total."""
        lines, total = [], 0
        while total < n_tokens:
            doc = self.rng.choice(self.docs).split("\n")
            start = self.rng.randrange(len(doc))
            for ln in doc[start:]:
                ln = ln + "\n"
                lines.append(ln)
                total += max(1, len(ln) // 3)  # cheap estimate (~3.2 chars/token)
                if total >= n_tokens:
                    break
        return lines

    def make_sample(self, length):
        rng = self.rng
        name = rng.choice(NAMES)
        key = "".join(rng.choice("0123456789") for _ in range(KEY_DIGITS))
        key_line = f'{name} = "{key}"\n'
        query = f'assert {name} == "'
        answer = self.sp.encode(key + '"')
        q_ids = self.sp.encode(query)
        k_ids = self.sp.encode(key_line)
        budget = length - len(answer) - len(q_ids) - len(k_ids)
        assert budget > 8, "length too small"
        lines = self._filler_lines(int(budget * 1.1) + 8)
        n_pre = int(len(lines) * rng.uniform(0.0, 0.1))
        pre = self.sp.encode("".join(lines[:n_pre])) if n_pre else []
        post_lines = lines[n_pre:]
        # encode filler after the key line; trim whole lines until it fits
        post = self.sp.encode("".join(post_lines))
        room = budget - len(pre)
        while len(post) > room and len(post_lines) > 1:
            over = len(post) - room
            drop = max(1, min(len(post_lines) - 1, over // 12))
            post_lines = post_lines[:-drop]
            post = self.sp.encode("".join(post_lines))
        if len(post) > room:
            post = post[:room]
        ids = pre + k_ids + post
        # pad at the front with more real code so the total is exactly `length`
        deficit = length - len(answer) - len(q_ids) - len(ids)
        while deficit > 0:
            extra = self.sp.encode("".join(self._filler_lines(deficit + 16)))
            ids = extra[-deficit:] + ids
            deficit = length - len(answer) - len(q_ids) - len(ids)
        ids = ids + q_ids + answer
        assert len(ids) == length, (len(ids), length)
        return ids, length - len(answer), key, name
