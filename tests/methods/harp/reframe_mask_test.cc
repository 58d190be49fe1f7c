// The reframed pass's dropout mask and logit mix, op by op:
// - PhiloxDropout against the masks of tools/reference/harp.py (an independent Philox and key
//   schedule in Python), bit for bit;
// - mask properties: the drop rate within 0.5 % of delta over 1M elements, dropped elements +0,
//   kept elements unchanged bit for bit, delta 0 keeps everything, the same words give the same
//   mask whatever the row order, another step t an independent mask;
// - Lerp: exactly a where b == a, a at weight 0, and a + w (b - a) within one rounding;
// - the guarded device backend (device memory discipline) gives the CPU's bits;
// - bad arguments are refused naming the op and the argument.
#include <cmath>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "methods/harp/reframe_mask.h"
#include "runtime/safetensors.h"
#include "tests/runtime/guarded_device_backend.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

constexpr char kFixture[] = "tests/fixtures/harp/harp_logits.safetensors";

// Rows of `hidden` values through PhiloxDropout on `backend`, with the words of (seed, request,
// step) at `positions`.
std::vector<float> Masked(Backend& backend, const std::vector<float>& values, int64_t hidden,
                          uint64_t seed, uint64_t request, const std::vector<int32_t>& positions,
                          int32_t step, float delta) {
  const int64_t rows = static_cast<int64_t>(positions.size());
  std::vector<uint32_t> words;
  for (int32_t p : positions) {
    const auto w = HarpMaskRowWords(HarpMaskKey(seed, request), p, step);
    words.insert(words.end(), w.begin(), w.end());
  }
  Tensor x(&backend, DType::kF32), w(&backend, DType::kI32);
  EXPECT_OK(x.Resize({rows, hidden}));
  EXPECT_OK(w.Resize({rows, 4}));
  EXPECT_OK(backend.CopyToDevice(x.view().data, values.data(), values.size() * sizeof(float)));
  EXPECT_OK(backend.CopyToDevice(w.view().data, words.data(), words.size() * sizeof(uint32_t)));
  EXPECT_OK(backend.PhiloxDropout({x.view(), w.view(), kHarpStream, delta}));
  EXPECT_OK(backend.Synchronize());
  std::vector<float> out(values.size());
  EXPECT_OK(backend.CopyToHost(out.data(), x.view().data, out.size() * sizeof(float)));
  return out;
}

std::vector<float> Ones(size_t n) { return std::vector<float>(n, 1.0f); }

TEST(ReframeMaskTest, MatchesThePythonReference) {
  ASSERT_OK_AND_ASSIGN(auto fixture, SafetensorsFile::Open(kFixture));
  ASSERT_OK_AND_ASSIGN(auto cpu, MakeBackend(BackendKind::kCpu));
  struct Case {
    const char* name;
    uint64_t request;
    int32_t step;
    float delta;
  };
  for (const Case& c : {Case{"mask.seed7.req1.t5.delta0.2", 1, 5, 0.2f},
                        Case{"mask.seed7.req3.t40.delta0.5", 3, 40, 0.5f}}) {
    SCOPED_TRACE(c.name);
    const TensorEntry& want = fixture->tensors().at(c.name);
    ASSERT_EQ(want.shape.size(), 2u);
    const int64_t rows = want.shape[0], hidden = want.shape[1];
    std::vector<int32_t> positions(rows);
    for (int64_t p = 0; p < rows; ++p) positions[p] = static_cast<int32_t>(p);
    const std::vector<float> got =
        Masked(*cpu, Ones(rows * hidden), hidden, 7, c.request, positions, c.step, c.delta);
    int64_t differ = 0, dropped = 0;
    for (int64_t i = 0; i < rows * hidden; ++i) {
      const bool drop = want.data[i] != 0;
      dropped += drop;
      differ += drop != (got[i] == 0.0f);
    }
    EXPECT_EQ(differ, 0);
    EXPECT_GT(dropped, 0);
  }
}

TEST(ReframeMaskTest, DropRateZerosAndKeptValues) {
  ASSERT_OK_AND_ASSIGN(auto cpu, MakeBackend(BackendKind::kCpu));
  const int64_t rows = 4096, hidden = 256;  // 1M elements
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::vector<float> values(rows * hidden);
  for (float& v : values) v = normal(rng);
  std::vector<int32_t> positions(rows);
  for (int64_t p = 0; p < rows; ++p) positions[p] = static_cast<int32_t>(p);
  for (float delta : {0.1f, 0.2f, 0.5f}) {
    SCOPED_TRACE(absl::StrCat("delta ", delta));
    const std::vector<float> got = Masked(*cpu, values, hidden, 0, 9, positions, rows, delta);
    int64_t dropped = 0;
    for (size_t i = 0; i < values.size(); ++i) {
      if (got[i] == 0.0f) {
        ++dropped;
        EXPECT_FALSE(std::signbit(got[i])) << "dropped elements are +0";
      } else {
        ASSERT_EQ(std::memcmp(&got[i], &values[i], 4), 0) << "kept elements are unscaled";
      }
    }
    const double rate = static_cast<double>(dropped) / values.size();
    EXPECT_NEAR(rate, delta, 0.005 * delta) << "drop rate " << rate;
  }
  const std::vector<float> kept = Masked(*cpu, values, hidden, 0, 9, positions, rows, 0.0f);
  EXPECT_EQ(std::memcmp(kept.data(), values.data(), values.size() * 4), 0);
}

TEST(ReframeMaskTest, MaskDependsOnWordsOnly) {
  ASSERT_OK_AND_ASSIGN(auto cpu, MakeBackend(BackendKind::kCpu));
  const int64_t hidden = 260;  // not a multiple of 4: the last group is partial
  const std::vector<int32_t> forward = {0, 1, 2, 3, 4, 5, 6, 7};
  const std::vector<int32_t> backward(forward.rbegin(), forward.rend());
  const auto a = Masked(*cpu, Ones(8 * hidden), hidden, 5, 2, forward, 8, 0.3f);
  const auto b = Masked(*cpu, Ones(8 * hidden), hidden, 5, 2, backward, 8, 0.3f);
  for (int64_t r = 0; r < 8; ++r) {  // row r of a is row 7 - r of b
    EXPECT_EQ(std::memcmp(&a[r * hidden], &b[(7 - r) * hidden], hidden * 4), 0) << "row " << r;
  }
  // Another step, request or seed: a different mask, overlapping about as independent masks do.
  for (const auto& other : {Masked(*cpu, Ones(8 * hidden), hidden, 5, 2, forward, 9, 0.3f),
                            Masked(*cpu, Ones(8 * hidden), hidden, 5, 3, forward, 8, 0.3f),
                            Masked(*cpu, Ones(8 * hidden), hidden, 6, 2, forward, 8, 0.3f)}) {
    int64_t both = 0;
    for (size_t i = 0; i < a.size(); ++i) both += a[i] == 0.0f && other[i] == 0.0f;
    const double overlap = static_cast<double>(both) / a.size();
    EXPECT_NEAR(overlap, 0.09, 0.03);
  }
}

TEST(ReframeMaskTest, ColumnOffsetSelectsTheGlobalColumns) {
  ASSERT_OK_AND_ASSIGN(auto cpu, MakeBackend(BackendKind::kCpu));
  std::vector<float> whole(3 * 96, 1.0f), part(3 * 32, 1.0f);
  std::vector<int32_t> words = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  const TensorView w = TensorView::Of(words.data(), DType::kI32, {3, 4});
  ASSERT_OK(cpu->PhiloxDropout(
      {TensorView::Of(whole.data(), DType::kF32, {3, 96}), w, kHarpStream, 0.5f, 0}));
  ASSERT_OK(cpu->PhiloxDropout(
      {TensorView::Of(part.data(), DType::kF32, {3, 32}), w, kHarpStream, 0.5f, 64}));
  for (int r = 0; r < 3; ++r) {  // columns 64..95 of the whole rows
    EXPECT_EQ(std::memcmp(&part[r * 32], &whole[r * 96 + 64], 32 * 4), 0) << "row " << r;
  }
  EXPECT_THAT(cpu->PhiloxDropout({TensorView::Of(part.data(), DType::kF32, {3, 32}), w,
                                  kHarpStream, 0.5f, 6})
                  .message(),
              ::testing::HasSubstr("column_offset must be a multiple of 4"));
}

TEST(ReframeMaskTest, LerpKeepsAgreeingValuesExactly) {
  ASSERT_OK_AND_ASSIGN(auto cpu, MakeBackend(BackendKind::kCpu));
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 8.0f);
  const int64_t n = 1000;
  std::vector<float> a(n), b(n), out(n);
  for (int64_t i = 0; i < n; ++i) {
    a[i] = normal(rng);
    b[i] = i % 3 == 0 ? a[i] : normal(rng);
  }
  a[1] = b[1] = -INFINITY;  // equal infinities stay (their difference would be NaN)
  const auto view = [n](std::vector<float>& v) {
    return TensorView::Of(v.data(), DType::kF32, {n});
  };
  for (float w : {0.0f, 0.5f, 1.0f, 0.3f}) {
    SCOPED_TRACE(absl::StrCat("weight ", w));
    ASSERT_OK(cpu->Lerp({view(a), view(b), view(out), w}));
    ASSERT_EQ(out[1], -INFINITY);
    for (int64_t i = 0; i < n; ++i) {
      if (b[i] == a[i] || w == 0.0f) {
        ASSERT_EQ(out[i], a[i]) << i;
      } else {
        const double want = a[i] + static_cast<double>(w) * (static_cast<double>(b[i]) - a[i]);
        ASSERT_NEAR(out[i], want, 2e-6 * (std::abs(want) + std::abs(a[i]) + 1)) << i;
      }
    }
  }
}

TEST(ReframeMaskTest, GuardedDeviceBackendGivesTheCpuBits) {
  ASSERT_OK_AND_ASSIGN(auto cpu, MakeBackend(BackendKind::kCpu));
  testing::GuardedDeviceBackend device;
  std::vector<float> values(16 * 96);
  for (size_t i = 0; i < values.size(); ++i) values[i] = 0.25f * static_cast<float>(i % 37) - 3;
  std::vector<int32_t> positions(16);
  for (int p = 0; p < 16; ++p) positions[p] = 3 * p;
  const auto want = Masked(*cpu, values, 96, 4, 8, positions, 50, 0.25f);
  const auto got = Masked(device, values, 96, 4, 8, positions, 50, 0.25f);
  EXPECT_EQ(std::memcmp(want.data(), got.data(), want.size() * 4), 0);
}

TEST(ReframeMaskTest, BadArgumentsAreRefused) {
  ASSERT_OK_AND_ASSIGN(auto cpu, MakeBackend(BackendKind::kCpu));
  std::vector<float> x(8);
  std::vector<int32_t> words(8);
  const TensorView xv = TensorView::Of(x.data(), DType::kF32, {2, 4});
  const TensorView wv = TensorView::Of(words.data(), DType::kI32, {2, 4});
  const TensorView short_words = TensorView::Of(words.data(), DType::kI32, {1, 4});
  EXPECT_THAT(cpu->PhiloxDropout({xv, wv, kHarpStream, 1.5f}).message(),
              ::testing::HasSubstr("PhiloxDropout: rate must be in [0, 1], got 1.5"));
  EXPECT_THAT(cpu->PhiloxDropout({xv, short_words, kHarpStream, 0.5f}).message(),
              ::testing::HasSubstr("PhiloxDropout: row_words has shape"));
  EXPECT_THAT(cpu->Lerp({xv, xv, xv, NAN}).message(),
              ::testing::HasSubstr("Lerp: weight must be finite"));
}

}  // namespace
}  // namespace tessera
