#!/usr/bin/env python3
"""Quality versus attention cost of Top-theta and Top-k, from tools/bench/top_theta.py.

Left: held-out perplexity relative to dense against the fraction of V rows read at decode
(code_passkey's decode steps), for the grid (layers 0-1 at k = 512, solid) and a run with every
layer at k (--all-layers, dashed, hollow markers). Middle: the same perplexity against the fraction of attention
elements kept at prefill. Right: next-line multiple-choice acc_norm and passkey accuracy against
the prefill fraction. One colour per variant, each point labelled with k; dense attention is the
black star at fraction 1.

  python3 tools/bench/plot_top_theta.py [--results results/bench/top_theta.json]
                                        [--out methods/top_theta/quality_vs_cost.png]
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLORS = {"theta_pre": "tab:blue", "theta_post": "tab:orange", "topk_pre": "tab:green",
          "topk_post": "tab:red"}
LABELS = {"theta_pre": "Top-θ pre-softmax + SDC + VMC", "theta_post": "Top-θ post-softmax + VMC",
          "topk_pre": "Top-k pre-softmax + SDC + VMC", "topk_post": "Top-k post-softmax + VMC"}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=os.path.join(REPO, "results", "bench", "top_theta.json"))
    ap.add_argument("--out", default=os.path.join(REPO, "methods", "top_theta",
                                                  "quality_vs_cost.png"))
    ap.add_argument("--all-layers", default=os.path.join(REPO, "results", "bench",
                                                         "top_theta_all_layers.json"),
                    help="a run with --first-layers-k 0, drawn dashed with hollow markers")
    args = ap.parse_args()
    report = json.load(open(args.results))
    dense = report["dense"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    runs = [(report, "o-", "")]
    if os.path.exists(args.all_layers):
        runs.append((json.load(open(args.all_layers)), "o--", " (every layer at k)"))
    for (run, style, suffix), variant in [(r, v) for r in runs for v in COLORS]:
        color = COLORS[variant]
        rows = sorted((r for r in run["rows"] if r["variant"] == variant), key=lambda r: r["k"])
        if not rows:
            continue
        rel = [r["perplexity"] / run["dense"]["perplexity"] for r in rows]
        for ax, x_key in ((axes[0], "decode_vrows"), (axes[1], "prefill_elements")):
            xs = [r[x_key] for r in rows]
            ax.plot(xs, rel, style, color=color, label=LABELS[variant] + suffix,
                    markerfacecolor="none" if suffix else color)
            for x, y, r in zip(xs, rel, rows):
                ax.annotate(f"k={r['k']}", (x, y), textcoords="offset points", xytext=(4, 4),
                            fontsize=7, color=color)
        if suffix:
            continue
        xs = [r["prefill_elements"] for r in rows]
        axes[2].plot(xs, [r["next_line_acc_norm"] for r in rows], "o-", color=color,
                     label=LABELS[variant] + ": next line acc_norm")
        axes[2].plot(xs, [r["passkey_acc"] for r in rows], "s--", color=color, alpha=0.6,
                     label=LABELS[variant] + ": passkey acc")
    for ax in axes[:2]:
        ax.plot([1.0], [1.0], "k*", markersize=12, label="dense")
        ax.axhline(1.01, color="gray", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_ylabel("perplexity / dense (held-out code files)")
    axes[0].set_xlabel("fraction of V rows read at decode (code_passkey)")
    axes[1].set_xlabel("fraction of attention elements kept at prefill (code files)")
    axes[2].plot([1.0], [dense["next_line_acc_norm"]], "k*", markersize=12)
    axes[2].plot([1.0], [dense["passkey_acc"]], "ks", markersize=8)
    axes[2].set_xscale("log")
    axes[2].set_xlabel("fraction of attention elements kept at prefill")
    axes[2].set_ylabel("accuracy")
    axes[0].legend(fontsize=7)
    axes[2].legend(fontsize=6)
    fig.suptitle("Top-θ / Top-k on tessera-code-tiny (solid: layers 0-1 at k=512 as in the "
                 "reference's grid; dashed: every layer at k; dense = ★)")
    fig.tight_layout()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
