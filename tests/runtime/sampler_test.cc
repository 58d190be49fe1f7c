// Philox4x32-10 against Random123's published known-answer vectors (kat_vectors), and
// SampleToken / ValidateSamplingParams against closed-form distributions.
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/philox.h"
#include "runtime/sampler.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;

// Random123 1.09, examples/kat_vectors: "philox4x32 10 <ctr x4> <key x2> <expected x4>".
TEST(PhiloxTest, Random123KnownAnswers) {
  EXPECT_EQ(Philox4x32({0, 0, 0, 0}, {0, 0}),
            (PhiloxCounter{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}));
  EXPECT_EQ(Philox4x32({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
                       {0xffffffffu, 0xffffffffu}),
            (PhiloxCounter{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}));
  EXPECT_EQ(Philox4x32({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
                       {0xa4093822u, 0x299f31d0u}),
            (PhiloxCounter{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}));
}

TEST(PhiloxTest, UniformFromBitsRange) {
  EXPECT_EQ(UniformFromBits(0), 0.0f);
  EXPECT_EQ(UniformFromBits(0xffffffffu), 1.0f - 0x1.0p-24f);  // strictly below 1
  EXPECT_EQ(UniformFromBits(0x80000000u), 0.5f);
}

SamplingParams Params(float temperature, int32_t top_k = 0, float top_p = 1.0f,
                      uint64_t seed = 1234) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_k = top_k;
  p.top_p = top_p;
  p.seed = seed;
  return p;
}

TEST(SampleTokenTest, GreedyIsArgmaxWithLowestIndexOnTies) {
  const std::vector<float> logits = {1.0f, 3.0f, -2.0f, 3.0f, 2.9f};
  for (uint64_t step = 0; step < 20; ++step) {
    EXPECT_EQ(SampleToken(logits, Params(0.0f), 0, step), 1);
  }
  EXPECT_EQ(SampleToken(std::vector<float>{-5.0f, -1.0f, -1.0f}, Params(0.0f), 0, 0), 1);
  EXPECT_EQ(SampleToken(std::vector<float>{0.0f, 0.0f, 0.0f, 0.0f}, Params(0.0f), 3, 9), 0);
}

TEST(SampleTokenTest, TopK1IsArgmaxAtAnyTemperature) {
  const std::vector<float> logits = {0.5f, 0.1f, 0.7f, 0.7f, 0.69f};
  for (float t : {0.1f, 1.0f, 5.0f, 100.0f}) {
    for (uint64_t step = 0; step < 50; ++step) {
      EXPECT_EQ(SampleToken(logits, Params(t, /*top_k=*/1), 7, step), 2) << "T=" << t;
    }
  }
}

TEST(SampleTokenTest, SameKeyGivesSameTokenDifferentSeedsDiffer) {
  const std::vector<float> logits(16, 0.0f);  // uniform over 16 tokens
  std::vector<int32_t> a, b, c, other_request;
  for (uint64_t step = 0; step < 200; ++step) {
    a.push_back(SampleToken(logits, Params(1.0f, 0, 1.0f, 42), 3, step));
    b.push_back(SampleToken(logits, Params(1.0f, 0, 1.0f, 42), 3, step));
    c.push_back(SampleToken(logits, Params(1.0f, 0, 1.0f, 43), 3, step));
    other_request.push_back(SampleToken(logits, Params(1.0f, 0, 1.0f, 42), 4, step));
  }
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_NE(a, other_request);
  // Uniform over 16 tokens: two independent streams agree on ~1/16 of steps, far below 50%.
  int same = 0;
  for (size_t i = 0; i < a.size(); ++i) same += a[i] == c[i];
  EXPECT_LT(same, 50);
  // All 16 tokens appear in 200 uniform draws (failure probability ~16 * (15/16)^200 < 1e-4).
  EXPECT_EQ(std::set<int32_t>(a.begin(), a.end()).size(), 16u);
}

// The seed's upper 32 bits are part of the key.
TEST(SampleTokenTest, HighSeedBitsMatter) {
  const std::vector<float> logits(16, 0.0f);
  std::vector<int32_t> lo, hi;
  for (uint64_t step = 0; step < 64; ++step) {
    lo.push_back(SampleToken(logits, Params(1.0f, 0, 1.0f, 5), 0, step));
    hi.push_back(SampleToken(logits, Params(1.0f, 0, 1.0f, 5 + (uint64_t{1} << 32)), 0, step));
  }
  EXPECT_NE(lo, hi);
}

std::vector<double> Softmax(const std::vector<float>& logits, double temperature) {
  std::vector<double> p(logits.size());
  double max = -1e300, total = 0;
  for (float l : logits) max = std::max(max, l / temperature);
  for (size_t i = 0; i < logits.size(); ++i) total += p[i] = std::exp(logits[i] / temperature - max);
  for (double& x : p) x /= total;
  return p;
}

// Pearson chi-square of `counts` against `probs` (cells with probability 0 must be empty).
double ChiSquare(const std::vector<int>& counts, const std::vector<double>& probs, int n) {
  double chi2 = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (probs[i] == 0) {
      EXPECT_EQ(counts[i], 0) << "token " << i << " has probability 0";
      continue;
    }
    const double e = n * probs[i];
    chi2 += (counts[i] - e) * (counts[i] - e) / e;
  }
  return chi2;
}

// 99.9th percentiles of the chi-square distribution.
constexpr double kChi2_999[] = {0, 10.83, 13.82, 16.27, 18.47};

std::vector<int> Draw(const std::vector<float>& logits, const SamplingParams& p, int n,
                      uint64_t request = 0) {
  std::vector<int> counts(logits.size(), 0);
  for (int step = 0; step < n; ++step) ++counts[SampleToken(logits, p, request, step)];
  return counts;
}

TEST(SampleTokenTest, FrequenciesMatchSoftmaxOverTemperature) {
  const std::vector<float> logits = {1.0f, 0.5f, -0.3f, 2.0f};
  constexpr int kDraws = 20000;
  for (float t : {0.7f, 1.0f, 2.5f}) {
    SCOPED_TRACE(t);
    const std::vector<int> counts = Draw(logits, Params(t, 0, 1.0f, 99), kDraws);
    const double chi2 = ChiSquare(counts, Softmax(logits, t), kDraws);
    EXPECT_LT(chi2, kChi2_999[3]) << counts[0] << " " << counts[1] << " " << counts[2] << " "
                                  << counts[3];
  }
}

TEST(SampleTokenTest, TopPKeepsExactlyTheNucleus) {
  // Probabilities at T=1 are 0.15, 0.5, 0.05, 0.3 (ids 0..3). Sorted: 0.5 (id 1), 0.3 (id 3),
  // 0.15 (id 0), 0.05 (id 2); cumulative 0.5, 0.8, 0.95, 1.0.
  const std::vector<float> logits = {std::log(0.15f), std::log(0.5f), std::log(0.05f),
                                     std::log(0.3f)};
  constexpr int kDraws = 20000;
  {
    // top_p 0.75: the nucleus is {1, 3} (0.5 < 0.75 <= 0.8), renormalised to 5/8 and 3/8.
    const std::vector<int> counts = Draw(logits, Params(1.0f, 0, 0.75f, 7), kDraws);
    EXPECT_EQ(counts[0], 0);
    EXPECT_EQ(counts[2], 0);
    EXPECT_LT(ChiSquare(counts, {0.0, 0.625, 0.0, 0.375}, kDraws), kChi2_999[1]);
  }
  {
    // top_p 0.9: the nucleus is {1, 3, 0} (0.8 < 0.9 <= 0.95).
    const std::vector<int> counts = Draw(logits, Params(1.0f, 0, 0.9f, 8), kDraws);
    EXPECT_EQ(counts[2], 0);
    EXPECT_LT(ChiSquare(counts, {0.15 / 0.95, 0.5 / 0.95, 0.0, 0.3 / 0.95}, kDraws), kChi2_999[2]);
  }
  {
    // top_p 0.4: the top token alone already reaches it.
    const std::vector<int> counts = Draw(logits, Params(1.0f, 0, 0.4f, 9), 2000);
    EXPECT_EQ(counts[1], 2000);
  }
}

TEST(SampleTokenTest, TopPBeforeTemperatureCutsTheUntemperedNucleus) {
  // Untempered probabilities 0.15, 0.5, 0.05, 0.3 (cumulative, sorted: 0.5, 0.8, 0.95, 1.0). At
  // temperature 3 the tempered cut at 0.75 would keep three tokens; the reference order keeps
  // {1, 3} (0.5 <= 0.75 < 0.8) and draws from softmax(logits / 3) over them.
  const std::vector<float> logits = {std::log(0.15f), std::log(0.5f), std::log(0.05f),
                                     std::log(0.3f)};
  constexpr int kDraws = 20000;
  SamplingParams p = Params(3.0f, 0, 0.75f, 21);
  const std::vector<int> tempered = Draw(logits, p, kDraws);
  EXPECT_GT(tempered[0], 0) << "the tempered cut keeps id 0";
  p.top_p_before_temperature = true;
  const std::vector<int> counts = Draw(logits, p, kDraws);
  EXPECT_EQ(counts[0], 0);
  EXPECT_EQ(counts[2], 0);
  const double a = std::pow(0.5, 1.0 / 3), b = std::pow(0.3, 1.0 / 3);
  EXPECT_LT(ChiSquare(counts, {0.0, a / (a + b), 0.0, b / (a + b)}, kDraws), kChi2_999[1]);
}

TEST(SampleTokenTest, TopKTwoNeverDrawsTheThird) {
  const std::vector<float> logits = {2.0f, -1.0f, 1.9f, 1.8f};
  constexpr int kDraws = 20000;
  const std::vector<int> counts = Draw(logits, Params(1.0f, /*top_k=*/2, 1.0f, 11), kDraws);
  EXPECT_EQ(counts[1], 0);
  EXPECT_EQ(counts[3], 0);
  const double p0 = 1.0 / (1.0 + std::exp(1.9 - 2.0));
  EXPECT_LT(ChiSquare(counts, {p0, 0.0, 1.0 - p0, 0.0}, kDraws), kChi2_999[1]);
}

TEST(SampleTokenTest, TopKAndTopPCombine) {
  // top_k 3 keeps ids {0, 2, 3}; their renormalised probabilities at T=1 are computed here and
  // the nucleus at 0.6 then keeps the two largest.
  const std::vector<float> logits = {1.0f, -3.0f, 0.8f, 0.2f};
  std::vector<double> p = Softmax({1.0f, 0.8f, 0.2f}, 1.0);  // ids 0, 2, 3
  ASSERT_LT(p[0], 0.6);
  ASSERT_GE(p[0] + p[1], 0.6);
  constexpr int kDraws = 20000;
  const std::vector<int> counts = Draw(logits, Params(1.0f, 3, 0.6f, 12), kDraws);
  EXPECT_EQ(counts[1], 0);
  EXPECT_EQ(counts[3], 0);
  EXPECT_LT(ChiSquare(counts, {p[0] / (p[0] + p[1]), 0.0, p[1] / (p[0] + p[1]), 0.0}, kDraws),
            kChi2_999[1]);
}

TEST(ValidateSamplingParamsTest, AcceptsValidRanges) {
  EXPECT_OK(ValidateSamplingParams(Params(0.0f)));
  EXPECT_OK(ValidateSamplingParams(Params(1.5f, 40, 0.95f)));
  EXPECT_OK(ValidateSamplingParams(Params(0.8f, 0, 1.0f)));
}

void ExpectRejected(const SamplingParams& p, const std::string& field) {
  const absl::Status s = ValidateSamplingParams(p);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(field));
}

TEST(ValidateSamplingParamsTest, RejectsOutOfRange) {
  ExpectRejected(Params(-1.0f), "temperature");
  ExpectRejected(Params(std::numeric_limits<float>::quiet_NaN()), "temperature");
  ExpectRejected(Params(std::numeric_limits<float>::infinity()), "temperature");
  ExpectRejected(Params(1.0f, 0, 0.0f), "top_p");
  ExpectRejected(Params(1.0f, 0, 1.5f), "top_p");
  ExpectRejected(Params(1.0f, 0, -0.1f), "top_p");
  ExpectRejected(Params(1.0f, 0, std::numeric_limits<float>::quiet_NaN()), "top_p");
  ExpectRejected(Params(1.0f, -1), "top_k");
}

TEST(ValidateSamplingParamsTest, MessagesGiveTheAllowedRange) {
  EXPECT_THAT(std::string(ValidateSamplingParams(Params(-1.0f)).message()), HasSubstr(">= 0"));
  EXPECT_THAT(std::string(ValidateSamplingParams(Params(1.0f, 0, 1.5f)).message()),
              HasSubstr("(0, 1]"));
  EXPECT_THAT(std::string(ValidateSamplingParams(Params(1.0f, -1)).message()), HasSubstr(">= 0"));
}

}  // namespace
}  // namespace tessera
