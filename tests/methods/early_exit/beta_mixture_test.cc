// BetaMixtureThreshold (FREE's adaptive threshold, spec early_exit.md §1.4, §6.5, §8 item 8):
// against tests/fixtures/early_exit/bmm.json (recorded by tools/reference/early_exit_bmm.py, which
// matches FREE's util/bmm.py in compat mode), method-of-moments recovery of Beta(2,5) and
// Beta(5,2), monotonicity of the lookup, the refit cap, and the degenerate inputs.
#include "methods/early_exit/beta_mixture.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace tessera {
namespace {

using nlohmann::json;

#ifdef TESSERA_SOURCE_DIR
constexpr char kFixture[] = TESSERA_SOURCE_DIR "/tests/fixtures/early_exit/bmm.json";
#else
constexpr char kFixture[] = "tests/fixtures/early_exit/bmm.json";  // ctest runs from the root
#endif
constexpr double kFixtureTolerance = 1e-9;  // relative, on alpha and beta

double Relative(double got, double want) { return std::abs(got - want) / std::abs(want); }

bool Finite(const BetaMixtureThreshold& bmm) {
  for (const BetaParams& p : bmm.components()) {
    if (!std::isfinite(p.alpha) || !std::isfinite(p.beta)) return false;
  }
  return std::isfinite(bmm.Threshold());
}

// n draws of Beta(a, b) as X / (X + Y), X ~ Gamma(a), Y ~ Gamma(b).
std::vector<double> BetaSamples(double a, double b, size_t n, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::gamma_distribution<double> ga(a, 1.0), gb(b, 1.0);
  std::vector<double> x(n);
  for (double& v : x) {
    const double u = ga(gen);
    v = u / (u + gb(gen));
  }
  return x;
}

TEST(BetaMixtureThresholdTest, GridIsNumpyLinspace) {
  std::ifstream in(kFixture);
  ASSERT_TRUE(in) << "cannot open " << kFixture;
  const json doc = json::parse(in, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(doc.is_discarded());
  const std::vector<double> want = doc["settings"]["grid_values"].get<std::vector<double>>();
  const auto grid = BetaMixtureThreshold::Grid();
  ASSERT_EQ(want.size(), grid.size());
  for (size_t k = 0; k < grid.size(); ++k) EXPECT_EQ(grid[k], want[k]) << "x_" << k;
}

TEST(BetaMixtureThresholdTest, MatchesReference) {
  std::ifstream in(kFixture);
  ASSERT_TRUE(in) << "cannot open " << kFixture;
  const json doc = json::parse(in, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(doc.is_discarded());
  const json& settings = doc["settings"];
  ASSERT_EQ(settings["zeta"].get<double>(), BetaMixtureThreshold::kZeta);
  ASSERT_EQ(settings["eps_nan"].get<double>(), BetaMixtureThreshold::kEpsNan);
  ASSERT_EQ(settings["clamp"].get<double>(), BetaMixtureThreshold::kClamp);
  ASSERT_EQ(settings["label_mix"].get<double>(), BetaMixtureThreshold::kLabelMix);
  ASSERT_GE(doc["cases"].size(), 10u);

  double max_error = 0.0;
  int updates = 0;
  for (const json& c : doc["cases"]) {
    for (const bool compat : {true, false}) {
      const std::string mode = compat ? "compat" : "non_compat";
      SCOPED_TRACE(c["name"].get<std::string>() + " " + mode);
      BetaMixtureOptions options;
      options.bmm_compat = compat;
      options.max_refits = settings["max_refits"].get<int>();
      options.initial_threshold = settings["initial_tau"].get<double>();
      BetaMixtureThreshold bmm(options);
      const json& expected = c[mode];
      ASSERT_EQ(expected.size(), c["samples"].size());
      for (size_t s = 0; s < expected.size(); ++s) {
        SCOPED_TRACE("sample " + std::to_string(s));
        const json& want = expected[s];
        const RefitOutcome outcome = bmm.Refit();
        EXPECT_EQ(RefitOutcomeName(outcome), want["outcome"].get<std::string>());
        updates += outcome == RefitOutcome::kUpdated;
        EXPECT_EQ(bmm.Threshold(), want["tau"].get<double>());
        for (int k = 0; k < 2; ++k) {
          const double a = want["alpha"][k].get<double>(), b = want["beta"][k].get<double>();
          const double err = std::max(Relative(bmm.components()[k].alpha, a),
                                      Relative(bmm.components()[k].beta, b));
          max_error = std::max(max_error, err);
          EXPECT_LE(err, kFixtureTolerance)
              << "component " << k << ": (" << bmm.components()[k].alpha << ", "
              << bmm.components()[k].beta << ") vs (" << a << ", " << b << ")";
        }
        const json& sample = c["samples"][s];
        for (size_t j = 0; j < sample["c"].size(); ++j) {
          ASSERT_OK(bmm.Add(sample["c"][j].get<double>(), sample["agree"][j].get<bool>()));
        }
      }
    }
  }
  EXPECT_GT(updates, 500);
  RecordProperty("max_rel_err", std::to_string(max_error));
  std::printf("[ bmm ] %d fitted refits, max relative error on alpha/beta %.3g\n", updates,
              max_error);
}

// Method of moments on 200k draws: the standard error of alpha and beta is ~0.35 % here, so the
// tolerance is over 8 standard errors.
TEST(BetaMixtureThresholdTest, MomentsRecoverBeta25AndBeta52) {
  constexpr size_t kN = 200000;
  constexpr double kTolerance = 0.03;  // relative
  const std::vector<double> low = BetaSamples(2.0, 5.0, kN, 11);
  const std::vector<double> high = BetaSamples(5.0, 2.0, kN, 12);
  const std::vector<double> ones(kN, 1.0);

  const std::optional<BetaParams> fit_low = FitBetaMoments(low, ones);
  const std::optional<BetaParams> fit_high = FitBetaMoments(high, ones);
  ASSERT_TRUE(fit_low && fit_high);
  EXPECT_NEAR(fit_low->alpha, 2.0, 2.0 * kTolerance);
  EXPECT_NEAR(fit_low->beta, 5.0, 5.0 * kTolerance);
  EXPECT_NEAR(fit_high->alpha, 5.0, 5.0 * kTolerance);
  EXPECT_NEAR(fit_high->beta, 2.0, 2.0 * kTolerance);

  // Through the mixture (compat): each component fits its own label, the other label at weight
  // 5e-4 shifts the moments by well under the tolerance.
  BetaMixtureThreshold bmm;
  for (size_t j = 0; j < kN; ++j) {
    ASSERT_OK(bmm.Add(low[j], false));
    ASSERT_OK(bmm.Add(high[j], true));
  }
  ASSERT_EQ(bmm.Refit(), RefitOutcome::kUpdated);
  EXPECT_NEAR(bmm.components()[0].alpha, 2.0, 2.0 * kTolerance);
  EXPECT_NEAR(bmm.components()[0].beta, 5.0, 5.0 * kTolerance);
  EXPECT_NEAR(bmm.components()[1].alpha, 5.0, 5.0 * kTolerance);
  EXPECT_NEAR(bmm.components()[1].beta, 2.0, 2.0 * kTolerance);
  // Beta(5,2) vs Beta(2,5): the posterior of "consistent" passes 0.4 just below 0.5.
  EXPECT_EQ(bmm.Threshold(), BetaMixtureThreshold::Grid()[3]);
}

// The agreeing rows extend down to a boundary s (agree iff c > s, c uniform): as s falls, tau
// never rises, and it spans most of the grid.
TEST(BetaMixtureThresholdTest, ThresholdFallsAsAgreementExtendsDown) {
  constexpr int kN = 2000;
  double previous = 1.0;
  std::vector<double> taus;
  for (int step = 0; step <= 12; ++step) {
    const double s = 0.85 - 0.05 * step;
    BetaMixtureThreshold bmm;
    for (int j = 0; j < kN; ++j) {
      const double c = (j + 0.5) / kN;
      ASSERT_OK(bmm.Add(c, c > s));
    }
    ASSERT_EQ(bmm.Refit(), RefitOutcome::kUpdated);
    EXPECT_LE(bmm.Threshold(), previous) << "boundary " << s;
    previous = bmm.Threshold();
    taus.push_back(previous);
  }
  EXPECT_GE(taus.front(), 0.8);
  EXPECT_EQ(taus.back(), BetaMixtureThreshold::kGridMin);
}

// Lookup on fitted parameters of matched spread (concentration 6 or 10 against Beta(2,5) and
// Beta(5,2), whose concentration is 7): tau never falls as the agreeing component's mean rises,
// and never rises as the disagreeing component's mean falls. (With very unequal spreads the
// narrower component loses both tails and the count-based lookup is not monotone.)
TEST(BetaMixtureThresholdTest, LookupIsMonotoneInTheComponentMeans) {
  for (const double k : {6.0, 10.0}) {
    SCOPED_TRACE("concentration " + std::to_string(k));
    double previous = 0.0;
    for (int step = 0; step <= 50; ++step) {
      const double mean = 0.4 + 0.01 * step;
      const double tau =
          LookupThreshold({BetaParams{2.0, 5.0}, BetaParams{k * mean, k * (1 - mean)}});
      EXPECT_GE(tau, previous) << "agree mean " << mean;
      previous = tau;
    }
    EXPECT_GE(previous, 0.6);
    previous = 1.0;
    for (int step = 0; step <= 55; ++step) {
      const double mean = 0.6 - 0.01 * step;
      const double tau =
          LookupThreshold({BetaParams{k * mean, k * (1 - mean)}, BetaParams{5.0, 2.0}});
      EXPECT_LE(tau, previous) << "disagree mean " << mean;
      previous = tau;
    }
    EXPECT_EQ(previous, BetaMixtureThreshold::kGridMin);
  }
}

TEST(BetaMixtureThresholdTest, NoRefitAfterMaxRefits) {
  BetaMixtureThreshold bmm;
  EXPECT_EQ(bmm.options().max_refits, 300);
  std::mt19937 gen(5);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int s = 0; s < 300; ++s) {
    for (int j = 0; j < 3; ++j) {
      const double c = u(gen);
      ASSERT_OK(bmm.Add(c, c > 0.5));
    }
    ASSERT_EQ(bmm.Refit(), RefitOutcome::kUpdated) << "refit " << s;
  }
  EXPECT_EQ(bmm.refits(), 300);
  EXPECT_TRUE(bmm.frozen());
  const double tau = bmm.Threshold();
  const auto components = bmm.components();
  const size_t size = bmm.size();
  // Data that would move tau a long way: agreement only at the bottom.
  for (int j = 0; j < 1000; ++j) ASSERT_OK(bmm.Add(j / 4000.0, true));
  EXPECT_EQ(bmm.size(), size);
  EXPECT_EQ(bmm.Refit(), RefitOutcome::kFrozen);
  EXPECT_EQ(bmm.refits(), 300);
  EXPECT_EQ(bmm.Threshold(), tau);
  EXPECT_EQ(bmm.components()[0].alpha, components[0].alpha);
  EXPECT_EQ(bmm.components()[1].beta, components[1].beta);

  BetaMixtureOptions options;
  options.max_refits = 2;
  BetaMixtureThreshold short_lived(options);
  ASSERT_OK(short_lived.Add(0.2, false));
  ASSERT_OK(short_lived.Add(0.9, true));
  ASSERT_OK(short_lived.Add(0.7, true));
  EXPECT_EQ(short_lived.Refit(), RefitOutcome::kUpdated);
  EXPECT_EQ(short_lived.Refit(), RefitOutcome::kUpdated);
  EXPECT_EQ(short_lived.Refit(), RefitOutcome::kFrozen);
}

TEST(BetaMixtureThresholdTest, DegenerateInputsKeepStateAndGiveNoNan) {
  for (const bool compat : {true, false}) {
    SCOPED_TRACE(compat ? "compat" : "non_compat");
    BetaMixtureOptions options;
    options.bmm_compat = compat;
    options.initial_threshold = 0.75;

    BetaMixtureThreshold empty(options);
    EXPECT_EQ(empty.Refit(), RefitOutcome::kNoData);
    EXPECT_EQ(empty.refits(), 0);
    EXPECT_EQ(empty.Threshold(), 0.75);
    EXPECT_EQ(empty.components()[0].alpha, BetaMixtureThreshold::kInitial[0].alpha);

    // Every confidence equal (after clamping): zero variance; counted, state kept.
    BetaMixtureThreshold flat(options);
    ASSERT_OK(flat.Add(1.0, true));
    ASSERT_OK(flat.Add(1.5, false));
    ASSERT_OK(flat.Add(1.0, true));
    EXPECT_EQ(flat.Refit(), RefitOutcome::kDegenerate);
    EXPECT_EQ(flat.refits(), 1);
    EXPECT_EQ(flat.Threshold(), 0.75);
    EXPECT_EQ(flat.components()[1].alpha, BetaMixtureThreshold::kInitial[1].alpha);
    EXPECT_TRUE(Finite(flat));
    // A later pair makes the fit well posed again.
    ASSERT_OK(flat.Add(0.1, false));
    EXPECT_EQ(flat.Refit(), RefitOutcome::kUpdated);
    EXPECT_TRUE(Finite(flat));

    BetaMixtureThreshold single(options);
    ASSERT_OK(single.Add(0.6, true));
    EXPECT_EQ(single.Refit(), RefitOutcome::kDegenerate);
    EXPECT_TRUE(Finite(single));

    // One label only, with the extremes 0 and 1 among the confidences.
    for (const bool agree : {true, false}) {
      BetaMixtureThreshold one_label(options);
      for (double c : {0.0, 0.2, 0.5, 0.8, 1.0}) ASSERT_OK(one_label.Add(c, agree));
      EXPECT_EQ(one_label.Refit(), RefitOutcome::kUpdated);
      EXPECT_TRUE(Finite(one_label));
      // FREE's code: both components fit the same data, so every grid point passes.
      if (compat) {
        EXPECT_EQ(one_label.Threshold(), BetaMixtureThreshold::kGridMin);
      }
    }

    BetaMixtureThreshold nan_input(options);
    EXPECT_EQ(nan_input.Add(std::nan(""), true).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(nan_input.Add(std::numeric_limits<double>::infinity(), false).code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(nan_input.size(), 0u);
  }
}

TEST(BetaMixtureThresholdTest, FitBetaMomentsRejectsDegenerateData) {
  const std::vector<double> same = {0.4, 0.4, 0.4};
  const std::vector<double> zero_weight = {0.0, 0.0, 0.0};
  const std::vector<double> ones = {1.0, 1.0, 1.0};
  const std::vector<double> spread = {0.2, 0.4, 0.6};
  EXPECT_FALSE(FitBetaMoments(same, ones).has_value());
  EXPECT_FALSE(FitBetaMoments(spread, zero_weight).has_value());
  const std::optional<BetaParams> p = FitBetaMoments(spread, ones);
  ASSERT_TRUE(p.has_value());
  // m = 0.4, s2 = 0.08 / 3: alpha = 0.4 (0.24 / s2 - 1) = 3.2, beta = 4.8.
  EXPECT_NEAR(p->alpha, 3.2, 1e-12);
  EXPECT_NEAR(p->beta, 4.8, 1e-12);
}

}  // namespace
}  // namespace tessera
