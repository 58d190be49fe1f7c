#!/usr/bin/env python3
"""Write models/<name>/README.md (the model card) from eval.json,
training_state.json, config.json and tools/train/corpus_manifest.json."""
import argparse
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

TRAIN_CMD = open(os.path.join(HERE, "train_command.txt")).read().strip() \
    if os.path.exists(os.path.join(HERE, "train_command.txt")) else "(see tools/train/README.md)"


def fmt_h(sec):
    return f"{sec/3600:.2f} h" if sec is not None else "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=os.path.join(REPO, "models", "tessera-code-tiny"))
    ap.add_argument("--runtime-results", default="",
                    help="results_*.json of `tessera eval --config configs/tasks/code_passkey.textproto`")
    args = ap.parse_args()
    m = args.model
    ev = json.load(open(os.path.join(m, "eval.json")))
    cfg = json.load(open(os.path.join(m, "config.json")))
    ts = json.load(open(os.path.join(m, "training_state.json")))
    man = json.load(open(os.path.join(HERE, "corpus_manifest.json")))
    ta = ts["train_args"]
    L = cfg["num_hidden_layers"]
    exits = cfg.get("tessera_exit_layers", [])
    size_mb = os.path.getsize(os.path.join(m, "model.safetensors")) / 1e6
    n_params = None
    try:
        from safetensors import safe_open
        with safe_open(os.path.join(m, "model.safetensors"), "pt") as f:
            n_params = sum(f.get_slice(k).get_shape()[0] * (f.get_slice(k).get_shape()[1]
                           if len(f.get_slice(k).get_shape()) > 1 else 1) for k in f.keys())
    except Exception:
        pass
    interim = ts["interim"]
    name = os.path.basename(os.path.abspath(m))
    status = (f"**Interim checkpoint**: step {ts['step']} of {ts['total_steps']} "
              f"({ts['tokens']/1e6:.1f} M of {ts['total_steps']*ta['batch']*ta['accum']*ta['seq_len']/1e6:.1f} M "
              f"training tokens). Training continues; this card is regenerated at each export."
              if interim else
              f"Final checkpoint: step {ts['step']} of {ts['total_steps']} ({ts['tokens']/1e6:.1f} M training tokens).")

    lines = []
    a = lines.append
    a(f"# {name}")
    a("")
    a("Tessera's embedded default model: a small Llama-architecture (grouped-query attention) causal LM "
      "trained from scratch on the Python standard library, so the runtime can be demonstrated offline in "
      "seconds. It is trained to be useful for the methods Tessera implements: intermediate exits that "
      f"predict (exits after {', '.join(map(str, exits))} of {L} blocks, through the shared final norm and LM head), "
      "retrieval within its 1024-token context (synthetic key-retrieval samples), and real attention / entropy "
      "structure from real code. It is a toy: it writes plausible-looking stdlib-style Python, not correct programs.")
    a("")
    a(status)
    a("")
    a("## Architecture")
    a("")
    a("| field | value |")
    a("|---|---|")
    for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings", "rope_theta",
              "rms_norm_eps", "tie_word_embeddings", "torch_dtype"):
        a(f"| `{k}` | {cfg.get(k)} |")
    a(f"| parameters | {n_params:,} |" if n_params else "| parameters | ? |")
    a(f"| `model.safetensors` | {size_mb:.1f} MB (bfloat16) |")
    a(f"| `tessera_exit_layers` | {exits} (exit after this many blocks: logits = `lm_head(norm(hidden_states[l]))`) |")
    a("")
    a("Files: `config.json` (classic Llama fields; extra keys `tessera_exit_layers`, `tessera_exit_loss`), "
      "`generation_config.json`, `model.safetensors`, `tokenizer.model`, `training_state.json`, `eval.json`, "
      "`loss_curve.png`.")
    a("")
    a("## Tokenizer")
    a("")
    rt = ev["tokenizer_roundtrip"]
    a(f"SentencePiece BPE, {rt['vocab_size']} pieces, byte fallback, trained on the training split. Llama ids: "
      "`<unk>`=0, `<s>`=1, `</s>`=2, no pad. Whitespace-exact for code: normalization `identity`, "
      "`remove_extra_whitespaces=false`, **`add_dummy_prefix=false`** (text is encoded as is, no leading ▁ is "
      "added), `split_digits`, whitespace-only pieces allowed (runs of spaces are single pieces), `\\n` and `\\t` "
      "are ordinary pieces and may merge with neighbours (e.g. `):\\n`). Sequences start with `<s>`. "
      f"`decode(encode(text)) == text` holds for {rt['roundtrip_exact']} of {rt['eval_files']} held-out files; "
      f"{rt['chars_per_token']:.2f} characters per token on the held-out files.")
    a("")
    a("## Data")
    a("")
    a(f"All `*.py` files of the standard library of the interpreter that ran the build "
      f"(`{man['python_implementation']} {man['python_version'].split()[0]}`), test packages included; excluded "
      "`site-packages/`, `config-*/`, `pydoc_data/`, `_sysconfigdata_*.py` and non-UTF-8 files. A file is held out "
      f"iff `sha1(relative path)` starts with `0`: {man['num_files']['train']} training files "
      f"({man['num_chars']['train']/1e6:.1f} M chars), {man['num_files']['eval']} held-out files "
      f"({man['num_chars']['eval']/1e6:.2f} M chars). SHA-256 of the concatenated raw bytes: train "
      f"`{man['sha256_concat']['train']}`, held-out `{man['sha256_concat']['eval']}`. The full file lists are in "
      "`tools/train/corpus_manifest.json`.")
    a("")
    a(f"{int(ta['kr_frac']*100)} % of the training windows start with a synthetic key-retrieval sample "
      "(`tools/train/keyretrieval.py`): real stdlib code with a line like `SECRET_KEY = \"48213\"` near its "
      "start and `assert SECRET_KEY == \"` at its end, whose continuation is the key; lengths uniform in "
      f"[64, {ta['seq_len']}] tokens. The key tokens weigh {ta.get('kr_answer_weight', 1.0):g}× in the loss"
      + (" (settings of the last phase; see Training for the earlier ones)." if ts.get("overrides") else "."))
    a("")
    a("**Licence of the data.** The Python standard library is distributed under the PSF License Agreement "
      "(Python Software Foundation License, version 2; see `LICENSE.txt` in the stdlib directory); a few files "
      "carry additional permissive notices. The weights are a statistical derivative of that code; they are "
      "shipped under the same terms as the corpus (PSF-2.0) together with the rest of this repository.")
    a("")
    a("## Training")
    a("")
    a(f"- Objective: next-token CE at the final layer and at the exits after {exits} blocks, all through the "
      "shared final RMSNorm + LM head, combined with depth weights `sum_l l*CE_l / sum_l l` (CALM's weighted CE, "
      "FREE's shallow-deep loss `(L_s*CE_s + L*CE_L)/(L_s+L)` generalised to several exits). Exit CEs use a "
      f"random {int(ta['exit_frac']*100)} % of the positions of each step (unbiased, cheaper).")
    a(f"- AdamW (β=0.9/0.95, weight decay {ta['wd']} on matrices), peak LR {ta['lr']}, {ta['warmup']} warm-up "
      f"steps, cosine to {ta['min_lr_frac']}×peak at step {ta['steps']}, grad-clip {ta['clip']}; "
      f"{ta['batch']*ta['accum']} sequences × {ta['seq_len']} tokens per step; bf16 autocast on CPU "
      "(fp32 master weights); seed " + str(ta['seed']) + ".")
    a(f"- Hardware: 2 CPU cores (AMD EPYC, shared with other work, run at `nice 19`). Training time" + (" so far" if interim else "") + ": "
      f"{fmt_h(ts['train_cpu_seconds'])} of wall-clock step time (excluding evals and checkpoints) for "
      f"{ts['tokens']/1e6:.1f} M tokens, in resumable sessions; about 5,000 tokens/s when the 2 cores are idle.")
    for ph in ts.get("overrides", []):
        changes = ", ".join(f"`{k}` = {v}" for k, v in ph["overrides"].items())
        a(f"- From step {ph['from_step']} the run was resumed with changed settings: {changes} "
          "(`--override`; earlier steps used the values in the first command below).")
    a("- Exact commands (from the repository root; `tools/train/README.md` has the data / tokenizer steps):")
    a("")
    a("```")
    a(TRAIN_CMD)
    a("```")
    a("")
    a("![loss curve](loss_curve.png)")
    a("")
    a("## Held-out results")
    a("")
    a(f"Computed by `tools/train/evaluate.py` with transformers {ev['transformers']} / torch {ev['torch']} on "
      f"the shipped bf16 weights (upcast to fp32), over {ev['heldout_tokens']:,} held-out tokens (files "
      f"concatenated as `<s> text </s>`, non-overlapping {ev['context']}-token windows).")
    a("")
    a("| exit (blocks run) | loss (nats) | perplexity | next-token acc | argmax = final | mean top-2 gap |")
    a("|---|---|---|---|---|---|")
    for l in exits + [L]:
        r = ev["heldout"][str(l)]
        lab = f"{l}" + (" (final)" if l == L else "")
        a(f"| {lab} | {r['loss']:.3f} | {r['ppl']:.2f} | {r['acc']*100:.1f} % | {r['agree_with_final']*100:.1f} % "
          f"| {r['mean_top2_gap']:.3f} |")
    bg = ev["bigram"]
    a(f"| bigram baseline (add-k, k={bg['best_k']:g}) | {bg['loss']:.3f} | {bg['ppl']:.2f} | {bg['acc']*100:.1f} % | | |")
    a("")
    a("The bigram baseline is fitted on the training-split tokens and scored on the same held-out "
      "(previous, next) pairs; k was picked from {1, 0.1, 0.01, 0.001} on the held-out set, which favours the "
      "baseline.")
    a("")
    a("**Key retrieval** (fresh samples, seed fixed, filler from the held-out files; a sample is correct when "
      "greedy decoding reproduces all 5 digits of the key; chance is 10⁻⁵):")
    a("")
    kr = ev["key_retrieval"]
    a("| context | " + " | ".join(("final" if l == L else f"exit {l}") for l in exits + [L]) + " |")
    a("|---|" + "---|" * (len(exits) + 1))
    for length in ("256", "512", "1024"):
        a(f"| {length} tokens (n={kr[length]['n']}) | " + " | ".join(
            f"{kr[length][str(l)]['acc']*100:.1f} %" for l in exits + [L]) + " |")
    a("")
    if args.runtime_results:
        rr = json.load(open(args.runtime_results))
        res = rr["results"]["code_passkey"]
        lay = rr["config"]["layout"]
        a(f"**The same ability in Tessera**: `tessera eval --config configs/tasks/code_passkey.textproto` "
          f"(held-out code, the key line at depths 0 to 1 of the filler rather than the first 10 % seen in "
          f"training; {rr['n-samples']['code_passkey']['effective']} samples; tp={lay['tp']}, pp={lay['pp']}): "
          f"accuracy {res['acc,none']*100:.1f} % ± {res['acc_stderr,none']*100:.1f}; by length " +
          ", ".join(f"{n}: {res[f'acc@{n},none']*100:.0f} %" for n in (256, 512, 1024)) + "; by depth " +
          ", ".join(f"{d}: {res[f'acc@depth{d},none']*100:.0f} %" for d in ("0.00", "0.25", "0.50", "0.75", "1.00"))
          + ".")
        a("")
    a("## Example completions")
    a("")
    a("Greedy, up to 64 new tokens, final layer (`tools/train/evaluate.py`):")
    a("")
    for c in ev["completions"]:
        a("```python")
        a(c["prompt"] + "⟨" + c["completion"] + "⟩")
        a("```")
        a("")
    a("(`⟨ … ⟩` marks the generated text.)")
    a("")
    a("## Reproduce")
    a("")
    a("See `tools/train/README.md`: `build_corpus.py` → `train_tokenizer.py` → `train.py` (resumable) → "
      "`export.py` → `evaluate.py` → `model_card.py`.")
    a("")
    with open(os.path.join(m, "README.md"), "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {m}/README.md")


if __name__ == "__main__":
    main()
