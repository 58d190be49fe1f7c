// Activation Beacon's window state machine and configuration (shared/specs/beacon.md §3-4, §8.2-4):
// the mask of W = 8, r = 2 (k = 4) for the three modes, with and without attend_previous;
// compressed-coordinate positions; memory sizes after n tokens whatever the chunking; the
// adapt-1024 ratio table; and config.json / settings errors naming the key or field.
#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "methods/beacon/beacon_config.h"
#include "methods/beacon/beacon_windows.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace tessera::beacon {
namespace {

BeaconConfig Small(BeaconMask mask, bool attend_previous) {
  BeaconConfig c;
  c.window = 8;
  c.stride = 8;
  c.ratios = {2};
  c.mask = mask;
  c.attend_previous = attend_previous;
  c.max_positions = 4096;
  return c;
}

// Two full windows: the second has M = 4 memory entries.
std::vector<WindowStep> TwoWindows(const BeaconConfig& c) {
  StreamState s;
  auto steps = PlanSteps(c, s, 16, 16, 4096);
  EXPECT_TRUE(steps.ok()) << steps.status();
  return steps.ok() ? *steps : std::vector<WindowStep>();
}

std::vector<int32_t> Range(int32_t begin, int32_t end) {
  std::vector<int32_t> out;
  for (int32_t e = begin; e < end; ++e) out.push_back(e);
  return out;
}

TEST(BeaconMaskTest, StepExpansionSeesMemoryAndAGrowingPrefix) {
  const auto steps = TwoWindows(Small(BeaconMask::kStepExpansion, true));
  ASSERT_EQ(steps.size(), 2u);
  for (int w = 0; w < 2; ++w) {
    const WindowStep& s = steps[w];
    const int32_t m = 4 * w;
    EXPECT_EQ(s.memory_before, m);
    EXPECT_EQ(s.ordinal, 8);
    ASSERT_EQ(s.beacons, 4);
    for (int32_t i = 0; i < 4; ++i) {
      // Memory [0, m) and window rows [m, m + 2(i + 1)): one prefix; then itself.
      EXPECT_EQ(s.prefix_end[i], m + 2 * (i + 1)) << "window " << w << " beacon " << i;
      EXPECT_TRUE(s.extra[i].empty());
      EXPECT_EQ(s.positions[8 + i], m + 2 * (i + 1));
      EXPECT_EQ(s.key_positions[8 + i], m + i);
    }
    for (int32_t j = 0; j < 8; ++j) {
      EXPECT_EQ(s.positions[j], m + j);
      EXPECT_EQ(s.key_positions[j], m + j);
    }
    // The slot keeps the memory and the window's beacons (entries m + 8 .. m + 11).
    std::vector<int32_t> keep = Range(0, m);
    for (int32_t e : Range(m + 8, m + 12)) keep.push_back(e);
    EXPECT_EQ(s.keep, keep);
  }
}

TEST(BeaconMaskTest, StepExpansionWithoutMemory) {
  const auto steps = TwoWindows(Small(BeaconMask::kStepExpansion, false));
  ASSERT_EQ(steps.size(), 2u);
  // First window: no memory, so the window prefix is a cache prefix.
  for (int32_t i = 0; i < 4; ++i) EXPECT_EQ(steps[0].prefix_end[i], 2 * (i + 1));
  for (int32_t i = 0; i < 4; ++i) {
    EXPECT_EQ(steps[1].prefix_end[i], 0);
    EXPECT_EQ(steps[1].extra[i], Range(4, 4 + 2 * (i + 1)));
  }
}

TEST(BeaconMaskTest, SegmentationSeesItsOwnSegment) {
  const auto steps = TwoWindows(Small(BeaconMask::kSegmentation, true));
  ASSERT_EQ(steps.size(), 2u);
  for (int32_t i = 0; i < 4; ++i) {
    const WindowStep& s = steps[1];
    EXPECT_EQ(s.prefix_end[i], i == 0 ? 6 : 4);  // beacon 0's segment follows the memory
    EXPECT_EQ(s.extra[i], i == 0 ? std::vector<int32_t>() : Range(4 + 2 * i, 6 + 2 * i));
    EXPECT_EQ(s.positions[8 + i], 4 + 2);  // every beacon at M + r
  }
  const auto alone = TwoWindows(Small(BeaconMask::kSegmentation, false));
  for (int32_t i = 0; i < 4; ++i) {
    EXPECT_EQ(alone[1].prefix_end[i], 0);
    EXPECT_EQ(alone[1].extra[i], Range(4 + 2 * i, 6 + 2 * i));
  }
}

TEST(BeaconMaskTest, FullCoverageSeesTheWholeWindow) {
  const auto steps = TwoWindows(Small(BeaconMask::kFullCoverage, true));
  ASSERT_EQ(steps.size(), 2u);
  for (int32_t i = 0; i < 4; ++i) {
    EXPECT_EQ(steps[1].prefix_end[i], 12);
    EXPECT_EQ(steps[1].positions[8 + i], 12);  // M + W
  }
}

TEST(BeaconStreamTest, MemoryFollowsTheFormulaWhateverTheChunks) {
  BeaconConfig c = Small(BeaconMask::kStepExpansion, true);
  c.window = c.stride = 64;
  c.ratios = {8};
  for (int64_t n : {1, 63, 64, 65, 128, 300, 1000}) {
    const auto [memory, raw] = MemoryAfter(c, 8, n);
    EXPECT_EQ(memory, n / 64 * 8);
    EXPECT_EQ(raw, n % 64);
    StreamState whole, pieces;
    ASSERT_TRUE(PlanSteps(c, whole, n, n, 4096).ok());
    for (int64_t fed = 0, chunk = 1; fed < n; fed += chunk, chunk = chunk * 3 + 1) {
      chunk = std::min(chunk, n - fed);
      ASSERT_TRUE(PlanSteps(c, pieces, chunk, n, 4096).ok());
    }
    for (const StreamState* s : {&whole, &pieces}) {
      EXPECT_EQ(s->memory, memory) << n;
      EXPECT_EQ(s->raw, raw) << n;
      EXPECT_EQ(s->tokens, n);
      EXPECT_EQ(s->windows, n / 64);
    }
  }
}

TEST(BeaconStreamTest, DecodeCondensesOnTheWindowsLastToken) {
  BeaconConfig c = Small(BeaconMask::kStepExpansion, true);
  StreamState s;
  ASSERT_TRUE(PlanSteps(c, s, 7, 7, 4096).ok());
  auto steps = PlanSteps(c, s, 1, 8, 4096);  // the 8th token: [token, 4 beacons]
  ASSERT_TRUE(steps.ok());
  ASSERT_EQ(steps->size(), 1u);
  EXPECT_EQ((*steps)[0].ordinal, 1);
  EXPECT_EQ((*steps)[0].beacons, 4);
  EXPECT_EQ((*steps)[0].raw_before, 7);
  EXPECT_EQ(s.memory, 4);
  EXPECT_EQ(s.raw, 0);
  steps = PlanSteps(c, s, 1, 9, 4096);  // the next token has no raw neighbours
  EXPECT_EQ((*steps)[0].positions, std::vector<int32_t>{4});
}

TEST(BeaconAdaptTest, Adapt1024Table) {
  BeaconConfig c;
  c.window = c.stride = 1024;
  c.ratios = {2, 4, 8, 16, 32, 64, 128};
  c.adapt_new_tokens = 1024;
  c.max_positions = 4096;
  EXPECT_EQ(ChooseRatio(c, 10000), 4);
  EXPECT_EQ(ChooseRatio(c, 30000), 16);
  EXPECT_EQ(ChooseRatio(c, 100000), 64);
  EXPECT_EQ(ChooseRatio(c, 400000), 128);  // past every capacity: the largest
  for (int64_t n : {10000, 30000, 100000}) {
    StreamState s;
    auto steps = PlanSteps(c, s, n, n, 4096);
    ASSERT_TRUE(steps.ok()) << steps.status();
    int32_t top = 0;
    for (const WindowStep& w : *steps) {
      for (int32_t p : w.positions) top = std::max(top, p);
    }
    EXPECT_LT(top, 4096) << n;
  }
  // 400,000 tokens exceed r = 128's capacity (394,240): refused, naming the ratio.
  StreamState s;
  auto too_long = PlanSteps(c, s, 400000, 400000, 4096);
  ASSERT_FALSE(too_long.ok());
  EXPECT_THAT(std::string(too_long.status().message()), ::testing::HasSubstr("ratio 128"));
}

// config.json beacon keys (and a model of max_position_embeddings 4096) into a config.
absl::StatusOr<BeaconConfig> Resolve(const nlohmann::json& keys,
                                     const config::BeaconSettings& settings = {}) {
  const std::string path =
      (std::filesystem::temp_directory_path() / ("beacon_config_" + std::to_string(::getpid()) +
                                                 ".json")).string();
  std::ofstream(path) << keys.dump();
  ModelConfig model;
  model.max_position_embeddings = 4096;
  model.source = path;
  return ResolveBeaconConfig(settings, model);
}

void ExpectError(const nlohmann::json& keys, absl::StatusCode code, const std::string& needle,
                 const config::BeaconSettings& settings = {}) {
  auto c = Resolve(keys, settings);
  ASSERT_FALSE(c.ok()) << keys.dump();
  EXPECT_EQ(c.status().code(), code) << c.status();
  EXPECT_THAT(std::string(c.status().message()), ::testing::HasSubstr(needle)) << c.status();
}

TEST(BeaconConfigTest, ReadsTheCheckpointKeysAndSettingsOverrideThem) {
  auto c = Resolve({{"beacon_window", 512}, {"beacon_stride", {512}},
                    {"beacon_ratio", {2, 4, 8}}, {"beacon_ratio_mix", "adapt-100"},
                    {"beacon_attn", "segmentation"}, {"beacon_attend_previous", false}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->window, 512);
  EXPECT_EQ(c->ratios, (std::vector<int32_t>{2, 4, 8}));
  EXPECT_EQ(c->adapt_new_tokens, 100);
  EXPECT_EQ(c->mask, BeaconMask::kSegmentation);
  EXPECT_FALSE(c->attend_previous);
  config::BeaconSettings s;
  s.add_ratios(4);
  s.set_attend_previous(true);
  c = Resolve({{"beacon_window", 512}, {"beacon_ratio", {2, 4, 8}},
               {"beacon_ratio_mix", "step-random"}}, s);
  ASSERT_TRUE(c.ok()) << c.status();  // the random mix is moot once the ratio is pinned
  EXPECT_EQ(c->ratios, std::vector<int32_t>{4});
  EXPECT_TRUE(c->attend_previous);
  c = Resolve(nlohmann::json::object());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->window, 1024);  // the reference class's defaults
  EXPECT_EQ(c->ratios, std::vector<int32_t>{8});
}

TEST(BeaconConfigTest, BadKeysNameTheKey) {
  using C = absl::StatusCode;
  ExpectError({{"beacon_ratio", {2, 4}}, {"beacon_ratio_mix", "step-random"}}, C::kInvalidArgument,
              "beacon_ratio_mix");
  ExpectError({{"beacon_ratio", {2, 4}}, {"beacon_ratio_mix", "instance-random"}},
              C::kInvalidArgument, "request history");
  ExpectError({{"beacon_window", 1024}, {"beacon_ratio", {3}}}, C::kInvalidArgument,
              "does not divide the stride");
  ExpectError({{"beacon_window", 512}, {"beacon_stride", {1024}}}, C::kInvalidArgument,
              "beacon_stride");
  ExpectError({{"beacon_window", 1024}, {"beacon_stride", {512}}}, C::kUnimplemented,
              "stride 512 below the window");
  ExpectError({{"beacon_attn", "diagonal"}}, C::kInvalidArgument, "beacon_attn");
  ExpectError({{"beacon_param", {"q", "k", "v", "o", "mlp"}}}, C::kUnimplemented, "mlp");
  ExpectError({{"beacon_window", 4000}, {"beacon_ratio", {8}}}, C::kInvalidArgument,
              "max_position_embeddings");
  ExpectError({{"beacon_window", "1024"}}, C::kInvalidArgument, "beacon_window");
  config::BeaconSettings s;
  s.add_ratios(7);
  ExpectError(nlohmann::json::object(), C::kInvalidArgument, "method.beacon.ratios", s);
}

}  // namespace
}  // namespace tessera::beacon
