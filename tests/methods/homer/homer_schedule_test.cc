// HOMER's split, layer schedule and targets (shared/specs/homer.md §1.2-1.4, §8.6), the token
// selection (§1.5) and the bias table's file format (§3).
#include <cstdio>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "methods/homer/bias_table.h"
#include "methods/homer/homer_schedule.h"
#include "methods/homer/token_selection.h"
#include "tests/test_util.h"

namespace tessera::homer {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

ScheduleSettings Llama7b() { return {2048, 2048, 12, 32}; }

// A context of `n` tokens with the spec's P = S = 100, C = 2048, W = 12, L = 32.
Schedule Plan(int64_t context, ScheduleSettings settings = Llama7b()) {
  absl::StatusOr<Schedule> s = MakeSchedule({100, context, 100}, settings);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : Schedule();
}

TEST(HomerScheduleTest, ChunkCountsFollowTheSplitTable) {
  // §1.2: E = 1848; n is the power of two at or above ceil(N / E).
  const std::pair<int64_t, int64_t> table[] = {{1848, 1},  {1849, 2},   {3696, 2},  {3697, 4},
                                               {7392, 4},  {14784, 8},  {29568, 16}, {59136, 32}};
  for (const auto& [context, chunks] : table) {
    EXPECT_EQ(Plan(context).chunks, chunks) << context;
  }
  const Schedule s = Plan(32568);  // the 32k example: n = 32, h = 5, e = 1018
  EXPECT_EQ(s.chunks, 32);
  EXPECT_EQ(s.height, 5);
  EXPECT_EQ(s.slice, 1018);
  EXPECT_EQ(s.LeafTokens(0), 1218);
  EXPECT_EQ(s.half_target, 1124);  // a leaf of 1218 tokens keeps 1124
  EXPECT_EQ(s.ChunkEnd(31) - s.ChunkBegin(31), 32568 - 31 * 1018);
  EXPECT_EQ(s.NextPosition(), 1218);
}

TEST(HomerScheduleTest, LayerScheduleMatchesTheLlama2Table) {
  // §1.3, L = 32, W = 12: (h, lpc, lo, level start layers a_0 .. a_{h-1}).
  struct Row {
    int64_t context, height, per_level, leftover;
    std::vector<int64_t> ends;
  };
  const Row rows[] = {{1000, 0, 20, 0, {32}},
                      {3000, 1, 10, 0, {22, 32}},
                      {7000, 2, 6, 2, {20, 26, 32}},
                      {14000, 3, 5, 0, {17, 22, 27, 32}},
                      {29000, 4, 4, 0, {16, 20, 24, 28, 32}},
                      {59000, 5, 3, 2, {17, 20, 23, 26, 29, 32}},
                      {118000, 6, 2, 6, {20, 22, 24, 26, 28, 30, 32}}};
  for (const Row& r : rows) {
    const Schedule s = Plan(r.context);
    EXPECT_EQ(s.height, r.height) << r.context;
    EXPECT_EQ(s.per_level, r.per_level) << r.context;
    EXPECT_EQ(s.leftover, r.leftover) << r.context;
    EXPECT_THAT(s.level_end, ElementsAreArray(r.ends)) << r.context;
  }
  // 13B (L = 40): h = 5 gives lpc = 4, lo = 4, leaves 0..19.
  const Schedule s13 = Plan(59000, {2048, 2048, 12, 40});
  EXPECT_EQ(s13.per_level, 4);
  EXPECT_EQ(s13.leftover, 4);
  EXPECT_EQ(s13.level_end[0], 20);
}

TEST(HomerScheduleTest, TargetsAndPositions) {
  const Schedule even = Plan(32568);
  EXPECT_EQ(even.RootTarget(), 2048);
  EXPECT_EQ(even.ChildTargets(5, 0), std::make_pair(int64_t{1124}, int64_t{1124}));
  // n = 2 with a last chunk of exactly Dh tokens (924 context): not short, both get Dh.
  const Schedule tail = Plan(1849);
  EXPECT_EQ(tail.slice, 925);
  EXPECT_EQ(tail.LeafTokens(1), 1124);
  EXPECT_EQ(tail.ChildTargets(1, 0), std::make_pair(int64_t{1124}, int64_t{1124}));
  EXPECT_EQ(tail.NextPosition(), 100 + 925 + 100);
  // One chunk: plain positions, next position P + N + S; the root keeps min(T, P + N + S).
  EXPECT_EQ(Plan(1000).NextPosition(), 1200);
  EXPECT_EQ(Plan(1000).RootTarget(), 1200);
}

TEST(HomerScheduleTest, ShortRightLeafKeepsItsLength) {
  // C = 64, P = S = 4: E = 56, Dh = 36. N = 60: n = 2, e = 30, leaves of 30 and 30 context
  // tokens (38 tokens each, >= Dh). N = 57 with C = 64: e = 29, last 28: 36 tokens = Dh.
  // N = 100, C = 64: n = 2, e = 50, last 50. Make the last short: N = 113 (n0 = 3, n = 4,
  // e = 29, last chunk 26 tokens: 34 < Dh).
  const Schedule s = *MakeSchedule({4, 113, 4}, {64, 64, 0, 8});
  ASSERT_EQ(s.chunks, 4);
  EXPECT_EQ(s.LeafTokens(3), 4 + 26 + 4);
  EXPECT_EQ(s.ChildTargets(1, 2), std::make_pair(int64_t{64 - 26}, int64_t{34}));
  EXPECT_EQ(s.ChildTargets(1, 0), std::make_pair(int64_t{36}, int64_t{36}));
  EXPECT_EQ(s.ChildTargets(2, 0), std::make_pair(int64_t{36}, int64_t{36}));
}

TEST(HomerScheduleTest, BadShapesAreRefusedNamingTheSetting) {
  EXPECT_THAT(std::string(MakeSchedule({100, 5000, 0}, Llama7b()).status().message()),
              HasSubstr("suffix of at least 1 token"));
  EXPECT_THAT(std::string(MakeSchedule({1000, 5000, 1047}, Llama7b()).status().message()),
              HasSubstr("leaves 1 context tokens per chunk"));
  // The empty-last-chunk split of the reference (C = 2048, N = 946 226, n = 1024).
  EXPECT_THAT(std::string(MakeSchedule({100, 946226, 100}, Llama7b()).status().message()),
              HasSubstr("leave the last chunk empty"));
  // lpc = 0: 2^7 chunks need 7 levels but W = 26 leaves 6 layers.
  EXPECT_THAT(std::string(MakeSchedule({100, 200000, 100}, {2048, 2048, 26, 32}).status().message()),
              HasSubstr("lower layers_warmup to at most"));
  EXPECT_THAT(std::string(MakeSchedule({100, 100, 100}, {2048, 2048, 32, 32}).status().message()),
              HasSubstr("leaves no layer to merge"));
  ScheduleSettings empty_levels = {2048, 2048, 32, 32};
  empty_levels.allow_empty_levels = true;  // the test-only independent-chunks mode
  EXPECT_TRUE(MakeSchedule({100, 5000, 100}, empty_levels).ok());
}

TEST(TokenSelectionTest, DropsTheLeastSignificantContextRowsOnly) {
  // Rows: prefix, 4 context, suffix (query last). Raw logits with distances 5..0.
  const std::vector<float> raw = {-9.0f, 1.0f, 0.5f, 2.0f, 0.5f, -7.0f};
  const std::vector<int32_t> positions = {0, 1, 2, 3, 4, 5};
  const std::vector<uint8_t> prunable = {0, 1, 1, 1, 1, 0};
  // No bias: drop 2 of 4; rows 2 and 4 tie at 0.5: both go (the lower index first).
  ASSERT_OK_AND_ASSIGN(auto keep, SelectKeep(raw, positions, prunable, nullptr, 0, 4));
  EXPECT_THAT(keep, ElementsAre(0, 1, 3, 5));
  ASSERT_OK_AND_ASSIGN(keep, SelectKeep(raw, positions, prunable, nullptr, 0, 5));
  EXPECT_THAT(keep, ElementsAre(0, 1, 3, 4, 5));  // tie: the lower index goes first
  // A bias by distance (pos_last - pos): distance 1 (row 4) has bias -3, so it ranks highest.
  BiasTable bias;
  bias.layers = 2;
  bias.distances = 6;
  bias.values.assign(12, 0.0f);
  bias.values[6 + 1] = -3.0f;  // layer 1, distance 1
  bias.values[6 + 2] = 5.0f;   // layer 1, distance 2 (row 3)
  ASSERT_OK_AND_ASSIGN(keep, SelectKeep(raw, positions, prunable, &bias, 1, 4));
  EXPECT_THAT(keep, ElementsAre(0, 1, 4, 5));
  // Targets below the affix count keep every affix row.
  ASSERT_OK_AND_ASSIGN(keep, SelectKeep(raw, positions, prunable, &bias, 1, 0));
  EXPECT_THAT(keep, ElementsAre(0, 5));
  // Distances are in positions, not rows: a merged node repeats positions.
  const std::vector<int32_t> merged = {0, 1, 2, 1, 2, 3};
  ASSERT_OK_AND_ASSIGN(keep, SelectKeep(raw, merged, prunable, &bias, 1, 4));
  // distances 2, 1, 2, 1: sig = 1-5, 0.5+3, 2-5, 0.5+3 -> rows 1 and 3 go.
  EXPECT_THAT(keep, ElementsAre(0, 2, 4, 5));
  bias.distances = 2;
  EXPECT_EQ(SelectKeep(raw, merged, prunable, &bias, 1, 4).status().code(),
            absl::StatusCode::kOutOfRange);
}

TEST(BiasTableTest, RoundTripsAndRefusesTablesThatDoNotFit) {
  BiasTable t;
  t.layers = 3;
  t.distances = 5;
  for (int i = 0; i < 15; ++i) t.values.push_back(0.25f * i - 1.0f);
  t.samples = 7;
  t.provenance["model"] = "tiny";
  const std::string path = ::testing::TempDir() + "/bias.safetensors";
  ASSERT_OK(WriteBiasTable(path, t));
  ASSERT_OK_AND_ASSIGN(const BiasTable back, ReadBiasTable(path));
  EXPECT_EQ(back.layers, 3);
  EXPECT_EQ(back.distances, 5);
  EXPECT_EQ(back.values, t.values);
  EXPECT_EQ(back.samples, 7);
  EXPECT_EQ(back.provenance.at("model"), "tiny");
  EXPECT_OK(CheckBiasFits(back, path, 3, 5));
  EXPECT_THAT(std::string(CheckBiasFits(back, path, 4, 5).message()),
              HasSubstr("has 3 layers but the model has 4"));
  EXPECT_THAT(std::string(CheckBiasFits(back, path, 3, 6).message()),
              HasSubstr("max_chunk_len 6 needs 0..5"));
  EXPECT_THAT(std::string(ReadBiasTable(path + ".missing").status().message()),
              HasSubstr("bias.safetensors.missing"));
  EXPECT_THAT(std::string(ReadBiasTable("models/tessera-code-tiny/model.safetensors")
                              .status()
                              .message()),
              HasSubstr("is not a HOMER bias table"));
}

}  // namespace
}  // namespace tessera::homer
