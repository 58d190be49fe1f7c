// Every parallel layout gives the single-rank answer: ranks run as threads (LocalCommunicator),
// each with its own backend and its shard of the model. For each golden fixture family and each
// layout (tp2, tp4 with KV-head replication where n_kv_heads < 4, pp2, tp2 x pp2), logits are
// within 1e-5 relative of the single-rank run and greedy tokens, batched with micro-batching,
// equal the tokens transformers produced. The long-context fixtures (dynamic NTK and yarn past
// max_position_embeddings) run the same check with max_seq_len 48.
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
  std::string model;  // under tests/fixtures/
  int tp, pp;
  testing::LayoutCheckOptions options;
};

class LayoutTest : public ::testing::TestWithParam<LayoutCase> {};

TEST_P(LayoutTest, MatchesSingleRankAndTransformers) {
  const LayoutCase& c = GetParam();
  const WorldLayout layout{c.tp, c.pp, 1, 0};
  const std::vector<absl::Status> statuses =
      testing::RunThreadedWorld(layout, [&](ProcessGroups& groups) {
        return testing::CheckLayout("tests/fixtures/" + c.model, groups, c.options);
      });
  for (const absl::Status& s : statuses) EXPECT_OK(s);
}

std::vector<LayoutCase> AllCases() {
  std::vector<LayoutCase> cases;
  const std::vector<std::pair<int, int>> layouts = {{2, 1}, {4, 1}, {1, 2}, {2, 2}};
  for (const char* model : {"llama2_mha", "llama70b_gqa", "codellama", "llama31", "llama70b_gqa_bf16"}) {
    for (auto [tp, pp] : layouts) cases.push_back({std::string("models/") + model, tp, pp});
  }
  // Past max_position_embeddings (16): a 40-token prompt and one whose 8 new tokens cross 16,
  // in one micro-batched batch; dynamic NTK rotates each sequence with its own length.
  const testing::LayoutCheckOptions long_context{.prompts = 2, .new_tokens = 8, .max_seq_len = 48};
  for (const char* scaling : {"dynamic", "yarn"}) {
    for (auto [tp, pp] : layouts) {
      cases.push_back({std::string("long_context/") + scaling, tp, pp, long_context});
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, LayoutTest, ::testing::ValuesIn(AllCases()),
                         [](const ::testing::TestParamInfo<LayoutCase>& info) {
                           std::string name =
                               info.param.model.substr(info.param.model.find('/') + 1);
                           if (info.param.options.max_seq_len > 0) name = "long_context_" + name;
                           return absl::StrCat(name, "_tp", info.param.tp, "_pp", info.param.pp);
                         });

}  // namespace
}  // namespace tessera
