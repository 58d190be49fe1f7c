#include "methods/early_exit/beta_mixture.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace tessera {
namespace {

using Self = BetaMixtureThreshold;

// p_self / (p_self + p_other) from the two log densities.
double Share(double log_self, double log_other) {
  return 1.0 / (1.0 + std::exp(log_other - log_self));
}

}  // namespace

double BetaLogPdf(double x, const BetaParams& p) {
  const double log_norm =
      std::lgamma(p.alpha) + std::lgamma(p.beta) - std::lgamma(p.alpha + p.beta);
  return (p.alpha - 1.0) * std::log(x) + (p.beta - 1.0) * std::log1p(-x) - log_norm;
}

std::optional<BetaParams> FitBetaMoments(std::span<const double> x, std::span<const double> w) {
  double sum_w = 0.0, sum_wx = 0.0;
  double lo = HUGE_VAL, hi = -HUGE_VAL;  // over the weighted values
  for (size_t j = 0; j < x.size(); ++j) {
    sum_w += w[j];
    sum_wx += w[j] * x[j];
    if (w[j] > 0.0) {
      lo = std::min(lo, x[j]);
      hi = std::max(hi, x[j]);
    }
  }
  // Equal values have zero variance, whatever rounding leaves in s2 below.
  if (!(lo < hi)) return std::nullopt;
  const double m = sum_wx / sum_w;
  double sum_wd2 = 0.0;
  for (size_t j = 0; j < x.size(); ++j) sum_wd2 += w[j] * (x[j] - m) * (x[j] - m);
  const double s2 = sum_wd2 / sum_w;
  if (!(s2 > 0.0)) return std::nullopt;
  BetaParams p;
  p.alpha = m * (m * (1.0 - m) / s2 - 1.0);
  p.beta = p.alpha * (1.0 - m) / m;
  if (!std::isfinite(p.alpha) || !std::isfinite(p.beta) || p.alpha <= 0.0 || p.beta <= 0.0) {
    return std::nullopt;
  }
  return p;
}

std::array<double, Self::kGridSize> Self::Grid() {
  std::array<double, kGridSize> grid;
  const double step = (kGridMax - kGridMin) / (kGridSize - 1);
  for (int k = 0; k < kGridSize; ++k) grid[k] = k * step + kGridMin;
  grid[kGridSize - 1] = kGridMax;
  return grid;
}

double LookupThreshold(const std::array<BetaParams, 2>& components) {
  const int i = components[1].Mean() > components[0].Mean() ? 1 : 0;
  const BetaParams& consistent = components[i];
  const BetaParams& other = components[1 - i];
  const std::array<double, Self::kGridSize> grid = Self::Grid();
  int count = 0;
  for (double x : grid) {
    if (Share(BetaLogPdf(x, consistent), BetaLogPdf(x, other)) > Self::kZeta) ++count;
  }
  return grid[std::clamp(Self::kGridSize - count, 0, Self::kGridSize - 1)];
}

const char* RefitOutcomeName(RefitOutcome outcome) {
  switch (outcome) {
    case RefitOutcome::kUpdated:
      return "updated";
    case RefitOutcome::kFrozen:
      return "frozen";
    case RefitOutcome::kNoData:
      return "no_data";
    case RefitOutcome::kDegenerate:
      return "degenerate";
  }
  return "unknown";
}

Self::BetaMixtureThreshold(BetaMixtureOptions options)
    : options_(options), tau_(options.initial_threshold) {}

absl::Status Self::Add(double confidence, bool agree) {
  if (!std::isfinite(confidence)) {
    return absl::InvalidArgumentError(
        absl::StrCat("early-exit calibration confidence must be finite, got ", confidence));
  }
  if (frozen()) return absl::OkStatus();
  confidence_.push_back(confidence);
  agree_.push_back(agree);
  return absl::OkStatus();
}

RefitOutcome Self::Refit() {
  if (frozen()) return RefitOutcome::kFrozen;
  const size_t n = confidence_.size();
  if (n == 0) return RefitOutcome::kNoData;
  ++refits_;

  std::vector<double> x(n);
  for (size_t j = 0; j < n; ++j) x[j] = std::clamp(confidence_[j], kClamp, 1.0 - kClamp);

  // E step: r[k][j], the weight of pair j in component k.
  std::array<std::vector<double>, 2> r = {std::vector<double>(n), std::vector<double>(n)};
  for (size_t j = 0; j < n; ++j) {
    double rj[2];
    for (int k = 0; k < 2; ++k) rj[k] = (1.0 - kLabelMix) * (agree_[j] == (k == 1) ? 1.0 : 0.0);
    if (!options_.bmm_compat) {
      const double l0 = BetaLogPdf(x[j], components_[0]);
      const double l1 = BetaLogPdf(x[j], components_[1]);
      rj[0] += kLabelMix * Share(l0, l1);
      rj[1] += kLabelMix * Share(l1, l0);
    }
    for (double& v : rj) v = v <= kEpsNan ? kEpsNan : v;
    const double norm = rj[0] + rj[1] + 1e-12;
    r[0][j] = rj[0] / norm;
    r[1][j] = rj[1] / norm;
  }

  // M step: one method-of-moments fit per component; the mixture weights are not updated.
  const std::optional<BetaParams> fit0 = FitBetaMoments(x, r[0]);
  const std::optional<BetaParams> fit1 = FitBetaMoments(x, r[1]);
  if (!fit0 || !fit1) return RefitOutcome::kDegenerate;
  components_ = {*fit0, *fit1};
  tau_ = LookupThreshold(components_);
  return RefitOutcome::kUpdated;
}

}  // namespace tessera
