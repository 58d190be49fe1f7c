// The forward hooks at every layout, against transformers where there is something to compare:
// - an exit after layer l gives the logits of transformers' model truncated to l + 1 layers
//   (tools/reference/forward_hooks.py), on the stage that holds l, which loaded a head for it;
//   later stages learn of the exit from the stage header, run nothing and write no K/V, and no
//   layer after l holds K/V of the step;
// - rows dropped after layer 1 give transformers' logits for the kept rows run through the
//   remaining layers alone, and the cache of the later layers holds only the kept rows;
// - a method's flags and payload words written on stage 0 reach the hooks of stage 1;
// - a hook that decides differently on two tensor-parallel ranks is caught with check_agreement:
//   every rank fails the step with a message naming the step, the layer and each rank's decision.
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/status_macros.h"
#include "runtime/llama_model.h"
#include "tests/golden/golden_fixture.h"
#include "tests/layouts/hook_checks.h"
#include "tests/layouts/threaded_world.h"
#include "tests/test_util.h"

namespace tessera {
namespace {
struct HooksCase {
  std::string model;
  int tp, pp;
};

void PrintTo(const HooksCase& c, std::ostream* os) {
  *os << c.model << " tp" << c.tp << " pp" << c.pp;
}

class ForwardHooksTest : public ::testing::TestWithParam<HooksCase> {
 protected:
  void Run(absl::Status (*check)(const std::string&, ProcessGroups&)) {
    const HooksCase& c = GetParam();
    const std::vector<absl::Status> statuses = testing::RunThreadedWorld(
        {c.tp, c.pp, 1, 0}, [&](ProcessGroups& groups) { return check(c.model, groups); });
    for (const absl::Status& s : statuses) EXPECT_OK(s);
  }
};

TEST_P(ForwardHooksTest, ExitAfterAnyLayerMatchesTheTruncatedModel) { Run(testing::CheckExits); }
TEST_P(ForwardHooksTest, KeptRowsMatchTransformers) { Run(testing::CheckKeepRows); }
TEST_P(ForwardHooksTest, StagePayloadReachesTheNextStage) { Run(testing::CheckPayload); }

std::vector<HooksCase> AllCases() {
  std::vector<HooksCase> cases;
  for (const char* model : {"llama2_mha", "llama70b_gqa"}) {
    for (auto [tp, pp] : std::vector<std::pair<int, int>>{{1, 1}, {2, 1}, {1, 2}, {2, 2}}) {
      cases.push_back({model, tp, pp});
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ForwardHooksTest, ::testing::ValuesIn(AllCases()),
                         [](const ::testing::TestParamInfo<HooksCase>& info) {
                           return absl::StrCat(info.param.model, "_tp", info.param.tp, "_pp",
                                               info.param.pp);
                         });

// Rank 1 exits after layer 1, rank 0 goes on: with check_agreement both ranks fail the step with
// the same message instead of waiting for each other in different collectives.
class SplitDecision : public LayerHook {
 public:
  absl::StatusOr<LayerAction> AfterLayer(const LayerContext& ctx) override {
    return ctx.layer == 1 && ctx.plan->tp_rank == 1 ? LayerAction::Exit()
                                                    : LayerAction::Continue();
  }
};

TEST(ForwardHooksAgreementTest, ADecisionThatDiffersBetweenRanksFailsEveryRank) {
  const std::vector<absl::Status> statuses = testing::RunThreadedWorld(
      {2, 1, 1, 0},
      [](ProcessGroups& groups) -> absl::Status {
        ASSIGN_OR_RETURN(testing::HookSetup s, testing::Prepare("llama70b_gqa", groups, {1}));
        SplitDecision hook;
        ForwardHooks hooks;
        hooks.layer = &hook;
        hooks.check_agreement = true;
        ForwardBatch batch = testing::AllPositions(s.prompt);
        batch.step = 9;
        return s.model->Forward(batch, *s.cache, hooks).status();
      },
      absl::Seconds(20));
  for (const absl::Status& s : statuses) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), "step 9") &&
                absl::StrContains(s.message(), "layer 1") &&
                absl::StrContains(s.message(), "tp rank 0: continue") &&
                absl::StrContains(s.message(), "tp rank 1: exit"))
        << s;
  }
}

}  // namespace
}  // namespace tessera
