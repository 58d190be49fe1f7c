#!/usr/bin/env python3
"""Quality versus cost of early exit, from the results of tools/bench/early_exit.py.

Columns: cost as mean blocks per new token (batch 1; the exit decisions do not depend on the
batch), then as the measured decode speedup over the plain model at batch 1 and at batch 8.
Rows: greedy agreement with the plain model (solid: position-wise, dashed: before the first
divergence) and perplexity of the chosen tokens under the plain model. One line per FREE exit
layer through its fixed thresholds (each point labelled with its threshold), the adaptive
threshold and STATIC as single points, one line for CALM over the full vocabulary through its
thresholds and a point per vocabulary reduction and threshold (a marker per reduction, the
threshold written once beside each threshold's points), the plain model as the reference; the y range fits FREE and CALM, and STATIC,
far lower in quality, is marked on the panel's edge with its value. The last column is the exit
heads' calibration on the plain outputs: the exit rate a threshold gives and the agreement of
the tokens that exit, against the measured exit rates (FREE's at its exit, CALM's at any of its
checks, with the agreement of CALM's exited tokens with the plain argmax given their prefix).
Settings absent from the results (an older file, a --only run) are left out.

  python3 tools/bench/plot_early_exit.py [--results results/bench/early_exit.json]
                                         [--out methods/early_exit/quality_vs_cost.png]
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLORS = {2: "tab:blue", 4: "tab:orange"}
CALM_COLOR = "tab:green"
# vocab_reduction -> (marker, colour, size, filled, legend label): markers that stay visible
# when the reductions land on the same point (they often give the full vocabulary's tokens).
REDUCTIONS = {"VOCAB_FIXED": ("P", "tab:purple", 7, True, "CALM, fixed top {k}"),
              "VOCAB_DECAYING": ("D", "tab:brown", 9, False, "CALM, decaying k(i)"),
              "VOCAB_ADAPTIVE": ("x", "tab:olive", 8, True, "CALM, adaptive k")}
LEGEND_ORDER = ("plain", "FREE", "STATIC", "CALM (", "CALM,")


def by_batch(results, batch):
    return next((b["settings"] for b in results["batches"] if b["batch"] == batch), None)


def reduction(r):
    """The row's vocabulary reduction: VOCAB_FULL for CALM without one, None for the others."""
    return r.get("vocab_reduction") or ("VOCAB_FULL" if r["policy"] == "CALM" else None)


def series(rows):
    """{(policy, exit_layer, adaptive, vocab_reduction): [rows]} with the lines ordered by
    threshold."""
    groups = {}
    for r in rows:
        groups.setdefault((r["policy"], r["exit_layer"], r["adaptive"], reduction(r)),
                          []).append(r)
    for key in groups:
        groups[key].sort(key=lambda r: -(r["threshold"] if r["threshold"] is not None else 0))
    return groups


def values(rows, metric):
    """(main, secondary) y values of the rows: agreement in % (position-wise, prefix) or the
    perplexity (no secondary)."""
    if metric == "agreement":
        return ([100 * r["quality"]["position_agreement"] for r in rows],
                [100 * r["quality"]["prefix_agreement"] for r in rows])
    return [r["quality"]["perplexity"] for r in rows], None


def draw(ax, rows, xkey, metric):
    """One panel: `metric` of the quality against the cost `xkey` for every setting. The y range
    fits the FREE settings and the plain model; STATIC, far below in quality, sits on the edge
    of the panel (a triangle pointing off the scale) labelled with its value."""
    x_of = {"layers": lambda r: r["counters"]["mean_layers_per_token"],
            "speedup": lambda r: r["timing"]["speedup"]}[xkey]
    near = [r for r in rows if r["policy"] != "STATIC"]
    main, second = values(near, metric)
    span = main + (second or [])
    lo, hi = min(span), max(span)
    pad = max(0.05 * (hi - lo), 1.0 if metric == "agreement" else 0.01)
    lo, hi = lo - pad, hi + pad
    reduced = {}  # threshold -> points of the reductions, labelled once per threshold
    for (policy, layer, adaptive, vocab), rs in sorted(series(rows).items(), key=str):
        xs = [x_of(r) for r in rs]
        ys, ys2 = values(rs, metric)
        color = COLORS.get(layer, "black")
        if policy == "PLAIN":
            ax.plot(xs, ys, "ko", ms=7, label="plain", zorder=5)
        elif policy == "STATIC":
            for x, y in zip(xs, ys):
                below = y < lo
                edge = lo + 0.02 * (hi - lo) if below else hi - 0.02 * (hi - lo)
                shown = y if lo <= y <= hi else edge
                ax.plot([x], [shown], "v" if below else ("^" if y > hi else "X"), color=color,
                        ms=9, label=f"STATIC, exit {layer}", clip_on=False)
                text = f"{y:.1f}%" if metric == "agreement" else f"{y:.2f}"
                ax.annotate(f"STATIC {layer}: {text}", (x, shown), textcoords="offset points",
                            xytext=(-8, 8 if below else -12), fontsize=7, color=color,
                            ha="right")
        elif policy == "CALM" and vocab == "VOCAB_FULL":
            ax.plot(xs, ys, "s-", color=CALM_COLOR, ms=5, label="CALM (checks 2, 4, 6)")
            if ys2:
                ax.plot(xs, ys2, "s--", color=CALM_COLOR, ms=4, mfc="none", alpha=0.7)
            for i, (x, y, r) in enumerate(zip(xs, ys, rs)):
                ax.annotate(f"{r['threshold']:g}", (x, y), textcoords="offset points",
                            xytext=(4, 4 if i % 2 == 0 else -10), fontsize=7, color=CALM_COLOR)
        elif policy == "CALM":
            marker, color, size, filled, label = REDUCTIONS.get(
                vocab, ("1", "black", 8, True, vocab))
            ax.plot(xs, ys, marker, color=color, ms=size, mfc=color if filled else "none",
                    mew=1.5, label=label.format(k=rs[0].get("vocab_k")))
            if ys2:
                ax.plot(xs, ys2, marker, color=color, ms=size * 0.6, mfc="none", alpha=0.6)
            for x, y, r in zip(xs, ys, rs):
                reduced.setdefault(r["threshold"], []).append((x, y))
        elif adaptive:
            ax.plot(xs, ys, "*", color=color, ms=12, label=f"FREE adaptive, exit {layer}")
            if ys2:
                ax.plot(xs, ys2, "*", color=color, ms=9, mfc="none")
        else:
            ax.plot(xs, ys, "o-", color=color, ms=5, label=f"FREE, exit {layer}")
            if ys2:
                ax.plot(xs, ys2, "o--", color=color, ms=4, mfc="none", alpha=0.7)
            for i, (x, y, r) in enumerate(zip(xs, ys, rs)):
                ax.annotate(f"{r['threshold']:g}", (x, y), textcoords="offset points",
                            xytext=(4, 4 if i % 2 == 0 else -10), fontsize=7, color=color)
    for tau, points in reduced.items():
        # Beside the point that is drawn furthest left (the blocks axis runs from 8 down).
        x, y = (max if xkey == "layers" else min)(points)
        ax.annotate(f"{tau:g}", (x, y), textcoords="offset points", xytext=(-7, 3), ha="right",
                    fontsize=7, color="dimgrey")
    ax.set_ylim(lo, hi)
    if metric == "agreement":
        ax.axhline(98, color="grey", lw=0.8, ls=":")
    if xkey == "speedup":
        ax.axvline(1.0, color="grey", lw=0.8, ls=":")
        ax.axvline(1.3, color="red", lw=0.8, ls=":")
    ax.grid(alpha=0.3)


def draw_calibration(ax_rate, ax_agree, results, rows):
    for layer, c in sorted(results["calibration"].items()):
        color = COLORS.get(int(layer), "black")
        taus = [p["threshold"] for p in c["curve"]]
        ax_rate.plot(taus, [100 * p["exit_rate"] for p in c["curve"]], color=color,
                     label=f"exit {layer} (calibration)")
        pts = [p for p in c["curve"] if p["exited_agreement"] is not None]
        ax_agree.plot([p["threshold"] for p in pts], [100 * p["exited_agreement"] for p in pts],
                      color=color, label=f"exit {layer}")
        measured = [r for r in rows if r["policy"] == "FREE" and r["exit_layer"] == int(layer)
                    and not r["adaptive"] and r["threshold"] < 1]
        ax_rate.plot([r["threshold"] for r in measured],
                     [100 * r["counters"]["exit_rate"] for r in measured], "o", color=color,
                     mfc="none", label=f"exit {layer} (FREE runs)")
    calm = sorted((r for r in rows if r["policy"] == "CALM" and reduction(r) == "VOCAB_FULL"),
                  key=lambda r: r["threshold"])
    if calm:
        ax_rate.plot([r["threshold"] for r in calm],
                     [100 * r["counters"]["exit_rate"] for r in calm], "s", color=CALM_COLOR,
                     mfc="none", label="exit 2, 4 or 6 (CALM runs)")
        pts = [r for r in calm if r["quality"].get("exited_token_agreement") is not None]
        ax_agree.plot([r["threshold"] for r in pts],
                      [100 * r["quality"]["exited_token_agreement"] for r in pts], "s",
                      color=CALM_COLOR, mfc="none", label="CALM runs (own prefix)")
    ax_rate.set_xlabel("threshold (top-2 gap)")
    ax_rate.set_ylabel("exit rate (%)")
    ax_rate.set_title("calibration: exit rate", fontsize=10)
    ax_rate.legend(fontsize=7)
    ax_rate.grid(alpha=0.3)
    ax_agree.axhline(98, color="grey", lw=0.8, ls=":")
    ax_agree.set_xlabel("threshold (top-2 gap)")
    ax_agree.set_ylabel("exited tokens = plain argmax (%)")
    ax_agree.set_title("calibration: agreement of exited tokens", fontsize=10)
    ax_agree.legend(fontsize=7)
    ax_agree.grid(alpha=0.3)


def repeats_text(results):
    """'median of N interleaved runs', or per family when merged invocations used other N."""
    per_family = {}
    for b in results["batches"]:
        for r in b["settings"]:
            if "pairs" in r["timing"]:
                family = r.get("family", r["policy"].lower())
                per_family.setdefault(family, set()).add(len(r["timing"]["pairs"]))
    counts = set().union(*per_family.values()) if per_family else {results["repeats"]}
    if len(counts) == 1:
        return f"median of {counts.pop()} interleaved runs"
    return "medians of " + ", ".join(
        f"{'/'.join(map(str, sorted(v)))} ({k.upper()})" for k, v in sorted(per_family.items())
    ) + " interleaved runs"


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=os.path.join(REPO, "results", "bench", "early_exit.json"))
    ap.add_argument("--out", default=os.path.join(REPO, "methods", "early_exit",
                                                  "quality_vs_cost.png"))
    args = ap.parse_args()
    with open(args.results, encoding="utf-8") as f:
        results = json.load(f)

    rows1, rows8 = by_batch(results, 1), by_batch(results, 8)
    columns = [("layers", rows1 or rows8, "mean blocks per new token")]
    if rows1:
        columns.append(("speedup", rows1, "decode speedup over plain, batch 1"))
    if rows8:
        columns.append(("speedup", rows8, "decode speedup over plain, batch 8"))
    ncols = len(columns) + 1
    fig, axes = plt.subplots(2, ncols, figsize=(4.6 * ncols, 8.4), squeeze=False)
    for col, (xkey, rows, xlabel) in enumerate(columns):
        draw(axes[0][col], rows, xkey, "agreement")
        draw(axes[1][col], rows, xkey, "perplexity")
        axes[1][col].set_xlabel(xlabel)
        if xkey == "layers":
            axes[0][col].invert_xaxis()
            axes[1][col].invert_xaxis()
    axes[0][0].set_ylabel("greedy agreement with plain (%)\nsolid: position-wise, dashed: prefix")
    axes[1][0].set_ylabel("perplexity of chosen tokens (plain model)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    unique = dict(sorted(unique.items(), key=lambda kv: (
        next((i for i, p in enumerate(LEGEND_ORDER) if kv[0].startswith(p)), len(LEGEND_ORDER)),
        kv[0])))
    rows_of_legend = 1 if len(unique) <= 8 else 2
    fig.legend(unique.values(), unique.keys(), loc="lower center",
               ncol=-(-len(unique) // rows_of_legend), fontsize=8, frameon=False)
    draw_calibration(axes[0][-1], axes[1][-1], results, rows1 or rows8)
    n = len(results["prompts"])
    fig.suptitle(f"Early exit on {results['model']}: quality vs cost ({n} held-out prompts, "
                 f"{results['max_new_tokens']} greedy tokens, {repeats_text(results)})",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0.025 + 0.025 * rows_of_legend, 1, 1))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
