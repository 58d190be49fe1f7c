// Every parallel layout gives the single-rank answer: ranks run as threads (LocalCommunicator),
// each with its own backend and its shard of the model. For each golden fixture family and each
// layout (tp2, tp4 with KV-head replication where n_kv_heads < 4, pp2, tp2 x pp2), logits are
// within 1e-5 relative of the single-rank run and greedy tokens, batched with micro-batching,
// equal the tokens transformers produced.
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/status_macros.h"
#include "parallel/process_groups.h"
#include "tests/layouts/layout_check.h"
#include "tests/layouts/threaded_world.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

struct LayoutCase {
  std::string model;
  int tp, pp;
};

class LayoutTest : public ::testing::TestWithParam<LayoutCase> {};

TEST_P(LayoutTest, MatchesSingleRankAndTransformers) {
  const LayoutCase& c = GetParam();
  const WorldLayout layout{c.tp, c.pp, 1, 0};
  const std::vector<absl::Status> statuses = testing::RunThreadedWorld(
      layout, [&](ProcessGroups& groups) {
        return testing::CheckLayout("tests/fixtures/models/" + c.model, groups);
      });
  for (const absl::Status& s : statuses) EXPECT_OK(s);
}

std::vector<LayoutCase> AllCases() {
  std::vector<LayoutCase> cases;
  for (const char* model : {"llama2_mha", "llama70b_gqa", "codellama", "llama31", "llama70b_gqa_bf16"}) {
    for (auto [tp, pp] : std::vector<std::pair<int, int>>{{2, 1}, {4, 1}, {1, 2}, {2, 2}}) {
      cases.push_back({model, tp, pp});
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, LayoutTest, ::testing::ValuesIn(AllCases()),
                         [](const ::testing::TestParamInfo<LayoutCase>& info) {
                           return absl::StrCat(info.param.model, "_tp", info.param.tp, "_pp",
                                               info.param.pp);
                         });

}  // namespace
}  // namespace tessera
