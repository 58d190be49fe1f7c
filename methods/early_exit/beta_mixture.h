// BetaMixtureThreshold: FREE's adaptive early-exit threshold (spec early_exit.md §1.4, §6.5).
//
// Calibration pairs (c, agree) come from the deep passes: c is the shallow exit's confidence (the
// top-2 probability gap) of a row and agree whether the shallow prediction of that row equals the
// deep one. A two-component Beta mixture is fitted to them (component 0: the disagreeing pairs,
// component 1: the agreeing ones) and the threshold tau is read off a 10-point grid:
//
//   BetaMixtureThreshold bmm;                       // tau = 0.9 until the first fit
//   // at admission of each request, before its first step (FREE: "no past KV"):
//   bmm.Refit();                                    // fits on every pair so far, 300 times at most
//   const double tau = bmm.Threshold();             // the request keeps this tau (§6.5)
//   // after each deep pass, one pair per chunk row:
//   bmm.Add(c_j, deep_argmax_j == shallow_argmax_j);
//
// The fit, as FREE executes it (bmm_compat = true, the default; §6.5):
// - the confidences are clamped to [kClamp, 1 - kClamp]; one E/M step;
// - responsibilities r_k = (1 - kLabelMix) * onehot_k(agree): the code's mixing with the
//   posterior is overwritten (the "hard-label quirk"); every r_k is floored at kEpsNan and each
//   pair's (r_0, r_1) divided by its sum (+1e-12), so each component sees the pairs of its own
//   label with weight ~0.9995 and the others with ~0.0005;
// - each component: weighted method of moments, m = mean, s2 = variance,
//   alpha = m (m (1 - m) / s2 - 1), beta = alpha (1 - m) / m;
// - the mixture weights stay [0.5, 0.5] and play no part in the lookup.
// With bmm_compat = false, r_k = kLabelMix * posterior_k + (1 - kLabelMix) * onehot_k (the intent),
// the posterior under the parameters before this refit (initially alpha {1, 2}, beta {2, 1});
// everything else is the same. That fit depends on the history of refits; the compat one does not.
//
// Lookup (LookupThreshold): i = the component with the larger mean alpha / (alpha + beta) (0 on a
// tie); over the grid x_k = linspace(kGridMin, kGridMax, kGridSize), pred_k =
// B_i(x_k) / (B_i(x_k) + B_other(x_k)) > kZeta; tau = x[clamp(kGridSize - sum pred, 0,
// kGridSize - 1)]. Densities are compared in log space, so the ratio never is 0/0.
//
// Edge cases (they never yield NaN):
// - no pairs: Refit returns kNoData; nothing changes and the attempt does not count (FREE skips
//   the refit when the calibration set is empty);
// - zero variance in either component (every clamped confidence equal, one pair included; the
//   responsibilities are never 0), or alpha/beta non-finite or <= 0: kDegenerate. The attempt
//   counts towards max_refits, as FREE's counter does, but the parameters and tau are kept (FREE
//   would store inf, or ~1e31 when rounding leaves s2 a hair above 0, and read tau = 0.9);
// - one label only is not degenerate. In compat mode both components then fit the same,
//   uniformly weighted confidences, coincide, and tau = kGridMin, exactly as FREE's code does;
// - after max_refits counted refits Refit returns kFrozen and Add drops its pair: no refit will
//   read it (FREE keeps collecting them).
//
// Not thread-safe (std::lgamma may write the global signgam): one instance, on one host thread,
// per deployment (§6.5: the last pipeline stage, TP rank 0). Fitting is in double precision.
#ifndef TESSERA_METHODS_EARLY_EXIT_BETA_MIXTURE_H_
#define TESSERA_METHODS_EARLY_EXIT_BETA_MIXTURE_H_

#include <array>
#include <cstddef>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/status.h"

namespace tessera {

// Parameters of one Beta component.
struct BetaParams {
  double alpha = 1.0;
  double beta = 1.0;
  double Mean() const { return alpha / (alpha + beta); }
};

// log Beta(x; alpha, beta) for x in (0, 1) and alpha, beta > 0.
double BetaLogPdf(double x, const BetaParams& p);

// Weighted method-of-moments Beta fit of `x` (values in (0, 1)) with weights `w` (>= 0, same
// length). nullopt when the variance is zero (no two values of positive weight differ; tested
// exactly, not on the rounded s2) or the result is not a valid Beta (alpha or beta non-finite
// or <= 0).
std::optional<BetaParams> FitBetaMoments(std::span<const double> x, std::span<const double> w);

// The FREE threshold for components {disagree, agree} (see the lookup above). Either order works:
// the component with the larger mean is taken as the consistent one.
double LookupThreshold(const std::array<BetaParams, 2>& components);

struct BetaMixtureOptions {
  bool bmm_compat = true;          // FREE's hard-label responsibilities (§6.5)
  int max_refits = 300;            // FREE bmm_update_max_iter
  double initial_threshold = 0.9;  // tau before the first fit (shallow2deep_conf_threshold)
};

enum class RefitOutcome {
  kUpdated,     // fitted: components and tau are new
  kFrozen,      // max_refits reached: nothing changes
  kNoData,      // no pairs yet: nothing changes, not counted
  kDegenerate,  // counted, but the fit was degenerate: components and tau kept
};

// "updated", "frozen", "no_data", "degenerate".
const char* RefitOutcomeName(RefitOutcome outcome);

class BetaMixtureThreshold {
 public:
  static constexpr int kGridSize = 10;
  static constexpr double kGridMin = 0.3;
  static constexpr double kGridMax = 0.9;
  static constexpr double kZeta = 0.4;      // posterior of "consistent" needed at a grid point
  static constexpr double kLabelMix = 0.8;  // FREE lam_r: posterior share of r (non-compat)
  static constexpr double kEpsNan = 1e-4;   // floor of a responsibility
  static constexpr double kClamp = 1e-4;    // confidences are clamped to [kClamp, 1 - kClamp]
  static constexpr BetaParams kInitial[2] = {{1.0, 2.0}, {2.0, 1.0}};

  // linspace(kGridMin, kGridMax, kGridSize), bit for bit as NumPy computes it.
  static std::array<double, kGridSize> Grid();

  explicit BetaMixtureThreshold(BetaMixtureOptions options = {});

  // Records one pair. InvalidArgument for a non-finite confidence (the pair is not kept);
  // finite values outside [0, 1] are kept and clamped by the fit. A no-op once frozen.
  absl::Status Add(double confidence, bool agree);
  // Refits on every pair so far (see the header comment for the outcomes).
  RefitOutcome Refit();

  // The current tau: options.initial_threshold until the first kUpdated refit.
  double Threshold() const { return tau_; }
  // {disagree, agree} components: kInitial until the first kUpdated refit.
  const std::array<BetaParams, 2>& components() const { return components_; }
  // Refits counted so far (kUpdated and kDegenerate).
  int refits() const { return refits_; }
  bool frozen() const { return refits_ >= options_.max_refits; }
  // Pairs recorded.
  size_t size() const { return confidence_.size(); }
  const BetaMixtureOptions& options() const { return options_; }

 private:
  BetaMixtureOptions options_;
  std::vector<double> confidence_;
  std::vector<bool> agree_;
  std::array<BetaParams, 2> components_ = {kInitial[0], kInitial[1]};
  double tau_;
  int refits_ = 0;
};

}  // namespace tessera

#endif  // TESSERA_METHODS_EARLY_EXIT_BETA_MIXTURE_H_
