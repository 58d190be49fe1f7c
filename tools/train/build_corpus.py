#!/usr/bin/env python3
"""Build the training / held-out corpus from the running interpreter's stdlib.

The corpus is every ``*.py`` file under ``sysconfig.get_paths()["stdlib"]``
(test packages included), minus a few machine-specific or generated files:

  * ``site-packages/``            (third-party code, differs per machine)
  * ``config-*/``                 (build-time config of this interpreter)
  * ``_sysconfigdata_*.py``       (machine-specific build variables)
  * ``pydoc_data/``               (one 750 kB generated prose blob)

Files are read as UTF-8 (files that fail to decode are skipped and listed in the
manifest) and sorted by relative path.  The held-out split is deterministic:
a file is held out for evaluation iff ``sha1(relpath).hexdigest()[0] == "0"``
(about 1/16 of the files).

Outputs:
  tools/train/corpus_manifest.json   (python version, file lists per split,
                                     sha256 of each split's concatenated raw bytes)
  <out>/corpus_train.jsonl, <out>/corpus_eval.jsonl  (one {"path","text"} per line)
"""
import argparse
import hashlib
import json
import os
import platform
import sys
import sysconfig

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = "/root/tessera-train/data"


def excluded(rel):
    parts = rel.split("/")
    if parts[0] == "site-packages" or parts[0].startswith("config-"):
        return True
    if parts[0] == "pydoc_data":
        return True
    if parts[-1].startswith("_sysconfigdata_"):
        return True
    return False


def is_eval(rel):
    return hashlib.sha1(rel.encode("utf-8")).hexdigest()[0] == "0"


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--manifest", default=os.path.join(HERE, "corpus_manifest.json"))
    args = ap.parse_args()

    root = sysconfig.get_paths()["stdlib"]
    rels = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in filenames:
            if fn.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, fn), root).replace(os.sep, "/")
                if not excluded(rel):
                    rels.append(rel)
    rels.sort()

    os.makedirs(args.out, exist_ok=True)
    files, skipped = [], []
    hashes = {"train": hashlib.sha256(), "eval": hashlib.sha256()}
    nchars = {"train": 0, "eval": 0}
    outs = {s: open(os.path.join(args.out, f"corpus_{s}.jsonl"), "w", encoding="utf-8")
            for s in ("train", "eval")}
    for rel in rels:
        with open(os.path.join(root, rel), "rb") as f:
            raw = f.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            skipped.append(rel)
            continue
        split = "eval" if is_eval(rel) else "train"
        hashes[split].update(raw)
        nchars[split] += len(text)
        outs[split].write(json.dumps({"path": rel, "text": text}, ensure_ascii=False) + "\n")
        files.append({"path": rel, "split": split})
    for f in outs.values():
        f.close()

    manifest = {
        "python_version": sys.version,
        "python_implementation": platform.python_implementation(),
        "stdlib_root": root,
        "rule": "all *.py under stdlib, sorted by relative path; excluded: site-packages/, config-*/, "
                "pydoc_data/, _sysconfigdata_*.py, non-UTF-8 files; eval iff sha1(relpath)[0]=='0'",
        "num_files": {s: sum(1 for x in files if x["split"] == s) for s in ("train", "eval")},
        "num_chars": nchars,
        "sha256_concat": {s: h.hexdigest() for s, h in hashes.items()},
        "skipped_non_utf8": skipped,
        "eval_files": [x["path"] for x in files if x["split"] == "eval"],
        "train_files": [x["path"] for x in files if x["split"] == "train"],
    }
    with open(args.manifest, "w") as f:
        json.dump(manifest, f, indent=0)
    print(json.dumps({k: manifest[k] for k in ("python_version", "num_files", "num_chars",
                                                "sha256_concat", "skipped_non_utf8")}, indent=1))


if __name__ == "__main__":
    main()
