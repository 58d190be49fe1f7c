#!/usr/bin/env python3
"""Quality versus cost of HARP, from the results of tools/bench/harp.py.

Left: next-line completion on held-out code, the change in similarity to the file's next line
against the plain runtime of the same sampling (greedy: circles, nucleus: squares), against the
decode cost relative to the plain decoder with its KV cache (log scale); mode EXACT one colour
per delta, each point labelled with theta (bits), SHADOW_LAZY in black, KV_NOISE in green. Right: the hesitation
rate each theta gives (greedy runs), which drives the cost.

  python3 tools/bench/plot_harp.py [--results results/bench/harp.json]
                                   [--out methods/harp/quality_vs_cost.png]
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLORS = {0.1: "tab:blue", 0.2: "tab:orange"}
MARKERS = {"greedy": "o", "nucleus": "s"}
MODES = {"shadow": "SHADOW_LAZY", "kvnoise": "KV_NOISE"}
MODE_COLORS = {"SHADOW_LAZY": "black", "KV_NOISE": "tab:green"}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=os.path.join(REPO, "results", "bench", "harp.json"))
    ap.add_argument("--out", default=os.path.join(REPO, "methods", "harp", "quality_vs_cost.png"))
    args = ap.parse_args()
    with open(args.results, encoding="utf-8") as f:
        results = json.load(f)
    fig, (ax, rate) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [2, 1]})
    labelled = set()
    for row in results["next_line"]:
        mode = MODES.get(row["name"].split("_")[0], "EXACT")
        delta = float(row["name"].split("_d")[1])
        theta = float(row["name"].split("_t")[1].split("_")[0])
        color = MODE_COLORS.get(mode) or COLORS[delta]
        label = f"{mode}, delta {delta:g}, {row['sampling']}"
        y = row["similarity"] - row["plain_similarity"]
        ax.scatter(row["cost_vs_plain"], y, color=color, marker=MARKERS[row["sampling"]],
                   label=None if label in labelled else label, s=40)
        labelled.add(label)
        ax.annotate(f"{theta:g}", (row["cost_vs_plain"], y), textcoords="offset points",
                    xytext=(4, 3), fontsize=7)
        if row["sampling"] == "greedy":
            rate.scatter(theta, row.get("hesitation_rate", 0), color=color,
                         marker="o" if mode == "EXACT" else "D")
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("decode time / plain decoder with KV cache (batch 1)")
    ax.set_ylabel("next-line similarity, HARP - plain")
    ax.set_title(f"{results['model']}: {results['next_line_prompts']} held-out next lines, "
                 f"{results['max_new_tokens']} new tokens; labels: theta (bits)", fontsize=9)
    ax.legend(fontsize=7)
    rate.set_xlabel("theta (bits)")
    rate.set_ylabel("hesitation rate (greedy)")
    rate.set_ylim(0, 1)
    rate.set_title("hesitations per checked token", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
