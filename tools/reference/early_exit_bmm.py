"""Records FREE's adaptive early-exit threshold (the Beta mixture of util/bmm.py) on synthetic data.

A NumPy-only restatement of the estimator in docs spec early_exit.md §1.4 / §6.5, written from the
semantics of the FREE code (raymin0223/fast_robust_early_exit, util/bmm.py + models/deploying_t5.py):

- calibration pairs (c, agree) accumulate over "samples" (requests); at the start of every sample
  the mixture is refit on all pairs so far, while fewer than 300 refits have been made, and
  tau = predict_proba(0.3, 0.9);
- the fit clamps c to [1e-4, 1 - 1e-4] and runs one E/M step. Responsibilities: compat mode (the
  code as executed) r = 0.2 * onehot(agree); non-compat (the intent) r = 0.8 * posterior +
  0.2 * onehot(agree), the posterior under the parameters before this refit. Either way r is
  floored at 1e-4 and divided per pair by its sum + 1e-12; each component gets a weighted
  method-of-moments Beta fit; the mixture weights stay [0.5, 0.5];
- lookup: i = the component with the larger mean a / (a + b) (the first on a tie); over
  x = linspace(0.3, 0.9, 10), pred_k = B_i(x_k) / (B_i(x_k) + B_other(x_k)) > 0.4;
  tau = x[clamp(10 - sum(pred), 0, 9)].

Beyond the code, a refit where a component has zero variance (all clamped confidences equal;
tested exactly, not on the rounded s2) or a, b come out non-finite or non-positive is
"degenerate": it counts as a refit but keeps the previous parameters and tau (the code would
store inf/NaN, or a ~1e30 from rounding noise, and read tau = 0.9 or worse). Beta densities are evaluated in log space
(math.lgamma), so no ratio is 0/0.

For every case the fixture holds the samples (each {"c": [...], "agree": [...]}, c float32 values)
and, per sample and per mode, what the refit at its start returned ("updated", "frozen",
"no_data", "degenerate"), the resulting tau, alpha[0..1] and beta[0..1] (component 0 fits the
disagreeing pairs, component 1 the agreeing ones). tests/methods/beta_mixture_test.cc replays it.

    pip install numpy
    python3 tools/reference/early_exit_bmm.py --out tests/fixtures/early_exit/bmm.json
"""
import argparse
import json
import math
import os
import re

import numpy as np

GRID_MIN, GRID_MAX, GRID_SIZE = 0.3, 0.9, 10
ZETA = 0.4
LABEL_MIX = 0.8       # lam_r: share of the posterior in the intended responsibilities
EPS_NAN = 1e-4        # floor of a responsibility
CLAMP = 1e-4          # confidences are clamped to [CLAMP, 1 - CLAMP]
MAX_REFITS = 300
INITIAL_TAU = 0.9
INIT_ALPHA, INIT_BETA = (1.0, 2.0), (2.0, 1.0)
SEED = 20231009


def beta_logpdf(x, a, b):
    """log Beta(x; a, b) for one float x in (0, 1)."""
    log_norm = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    return (a - 1.0) * math.log(x) + (b - 1.0) * math.log1p(-x) - log_norm


def share(l_self, l_other):
    """p_self / (p_self + p_other) from the two log densities."""
    return 1.0 / (1.0 + math.exp(l_other - l_self))


def moments_fit(x, w):
    """Weighted method-of-moments Beta fit; None when degenerate."""
    weighted = x[w > 0.0]
    if weighted.size == 0 or weighted.min() == weighted.max():
        return None  # zero variance, whatever rounding would leave in s2
    m = np.sum(w * x) / np.sum(w)
    s2 = np.sum(w * (x - m) ** 2) / np.sum(w)
    if not s2 > 0.0:
        return None
    a = m * (m * (1.0 - m) / s2 - 1.0)
    b = a * (1.0 - m) / m
    if not (math.isfinite(a) and math.isfinite(b) and a > 0.0 and b > 0.0):
        return None
    return float(a), float(b)


def lookup(alpha, beta):
    grid = np.linspace(GRID_MIN, GRID_MAX, GRID_SIZE)
    means = [alpha[k] / (alpha[k] + beta[k]) for k in range(2)]
    i = 1 if means[1] > means[0] else 0
    o = 1 - i
    count = 0
    for x in grid:
        x = float(x)
        if share(beta_logpdf(x, alpha[i], beta[i]), beta_logpdf(x, alpha[o], beta[o])) > ZETA:
            count += 1
    idx = min(max(0, GRID_SIZE - count), GRID_SIZE - 1)
    return float(grid[idx])


class Estimator:
    def __init__(self, compat):
        self.compat = compat
        self.alpha = list(INIT_ALPHA)
        self.beta = list(INIT_BETA)
        self.tau = INITIAL_TAU
        self.refits = 0
        self.c, self.agree = [], []

    def add(self, pairs):
        for c, agree in pairs:
            self.c.append(c)
            self.agree.append(1 if agree else 0)

    def responsibilities(self, x, y):
        onehot = np.zeros((2, len(x)))
        onehot[y, np.arange(len(x))] = 1.0
        if self.compat:
            r = (1.0 - LABEL_MIX) * onehot
        else:
            post = np.zeros((2, len(x)))
            for j, xj in enumerate(x):
                l0 = beta_logpdf(float(xj), self.alpha[0], self.beta[0])
                l1 = beta_logpdf(float(xj), self.alpha[1], self.beta[1])
                post[0, j] = share(l0, l1)
                post[1, j] = share(l1, l0)
            r = LABEL_MIX * post + (1.0 - LABEL_MIX) * onehot
        r[r <= EPS_NAN] = EPS_NAN
        return r / (r.sum(axis=0) + 1e-12)

    def refit(self):
        if self.refits >= MAX_REFITS:
            return "frozen"
        if not self.c:
            return "no_data"
        self.refits += 1
        x = np.clip(np.array(self.c, dtype=np.float64), CLAMP, 1.0 - CLAMP)
        y = np.array(self.agree, dtype=np.int64)
        r = self.responsibilities(x, y)
        fits = [moments_fit(x, r[k]) for k in range(2)]
        if fits[0] is None or fits[1] is None:
            return "degenerate"
        self.alpha = [fits[0][0], fits[1][0]]
        self.beta = [fits[0][1], fits[1][1]]
        self.tau = lookup(self.alpha, self.beta)
        return "updated"


def replay(samples, compat):
    est = Estimator(compat)
    out = []
    for pairs in samples:
        outcome = est.refit()
        out.append({"outcome": outcome, "tau": est.tau, "alpha": list(est.alpha),
                    "beta": list(est.beta)})
        est.add(pairs)
    return out


def pairs_of(c, agree):
    """[[c, agree], ...] with c rounded to float32, as the model's confidences are."""
    c = np.asarray(c, dtype=np.float32)
    return [[float(ci), bool(ai)] for ci, ai in zip(c, agree)]


def labelled(rng, disagree, agree):
    """Pairs from two confidence arrays, shuffled together."""
    pairs = pairs_of(disagree, [False] * len(disagree)) + pairs_of(agree, [True] * len(agree))
    order = rng.permutation(len(pairs))
    return [pairs[k] for k in order]


def one_set(pairs):
    """One refit on `pairs`: a first sample that collects them, a second whose refit reads them."""
    return [pairs, []]


def make_cases(seed):
    rng = np.random.default_rng(seed)
    cases = []
    cases.append(("separable", one_set(labelled(
        rng, rng.uniform(0.0, 0.4, 150), rng.uniform(0.6, 1.0, 250)))))
    cases.append(("overlapping", one_set(labelled(
        rng, rng.beta(3.0, 4.0, 300), rng.beta(4.0, 3.0, 300)))))
    cases.append(("beta25_vs_beta52", one_set(labelled(
        rng, rng.beta(2.0, 5.0, 1000), rng.beta(5.0, 2.0, 1000)))))
    cases.append(("agree_low_disagree_high", one_set(labelled(
        rng, rng.beta(6.0, 2.0, 200), rng.beta(2.0, 3.0, 200)))))
    cases.append(("small", one_set([[0.125, False], [0.75, True], [0.5, True]])))
    cases.append(("two_pairs", one_set([[0.25, False], [0.8125, True]])))
    cases.append(("clamped_ends", one_set(
        [[0.0, False], [0.0, False], [0.25, False], [1.0, True], [1.0, True], [0.5, True],
         [1.0, False]])))
    cases.append(("one_label_agree", one_set(labelled(rng, [], rng.beta(5.0, 2.0, 50)))))
    cases.append(("one_label_disagree", one_set(labelled(rng, rng.beta(2.0, 5.0, 50), []))))
    cases.append(("zero_variance", [[[0.5, True], [0.5, False], [0.5, True]], [],
                                    [[0.75, True]], []]))
    cases.append(("equal_inexact", [pairs_of([0.4] * 7, [True, False] * 3 + [True]), []]))
    # Requests over a drifting model: each adds 2..7 pairs; the agree share and the confidence of
    # agreeing rows grow slowly. 330 samples: the refits stop after 300.
    samples = []
    for s in range(330):
        n = int(rng.integers(2, 8))
        drift = s / 330.0
        agree = rng.uniform(size=n) < 0.55 + 0.3 * drift
        c = np.where(agree, rng.beta(3.0 + 3.0 * drift, 2.0, n), rng.beta(2.0, 4.0, n))
        samples.append(pairs_of(c, agree))
    cases.append(("many_samples", samples))
    return cases


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="tests/fixtures/early_exit/bmm.json")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    doc = {
        "tool": "tools/reference/early_exit_bmm.py",
        "versions": {"numpy": np.__version__},
        "settings": {"seed": args.seed, "grid": [GRID_MIN, GRID_MAX, GRID_SIZE],
                     "grid_values": [float(v) for v in np.linspace(GRID_MIN, GRID_MAX, GRID_SIZE)],
                     "zeta": ZETA,
                     "label_mix": LABEL_MIX, "eps_nan": EPS_NAN, "clamp": CLAMP,
                     "max_refits": MAX_REFITS, "initial_tau": INITIAL_TAU,
                     "init_alpha": list(INIT_ALPHA), "init_beta": list(INIT_BETA)},
        "cases": [],
    }
    for name, samples in make_cases(args.seed):
        stored = [{"c": [p[0] for p in pairs], "agree": [p[1] for p in pairs]} for pairs in samples]
        doc["cases"].append({"name": name, "samples": stored,
                             "compat": replay(samples, True),
                             "non_compat": replay(samples, False)})
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    text = json.dumps(doc, indent=1)
    # Innermost lists of numbers and booleans on one line each.
    text = re.sub(r"\[\s+([^\[\]{}\"]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]",
                  text)
    with open(args.out, "w") as f:
        f.write(text + "\n")
    for case in doc["cases"]:
        last = [case[m][-1] for m in ("compat", "non_compat")]
        print("%-24s tau compat %.4f non-compat %.4f (%s, %s)" % (
            case["name"], last[0]["tau"], last[1]["tau"], last[0]["outcome"], last[1]["outcome"]))


if __name__ == "__main__":
    main()
