// StepEngine at every layout:
// - a policy of two passes (the second a scratch pass of the same rows in another slot, whose K/V
//   is not kept) combined by Add gives exactly twice the one-pass top logit, and the scratch slot
//   is empty afterwards;
// - an exit after layer 0 (on stage 0 under pp) gives, on every rank, the argmax of transformers'
//   one-layer model (tools/reference/forward_hooks.py): the words travel from the exit stage to
//   the last and from there to every stage.
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/status_macros.h"
#include "runtime/step_engine.h"
#include "tests/golden/golden_fixture.h"
#include "tests/layouts/threaded_world.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

constexpr char kModel[] = "llama2_mha";

struct Layout {
  int tp, pp;
};

class ScratchSecondPass : public StepPolicy {
 public:
  int Passes(const ForwardBatch&) override { return 2; }
  ForwardBatch PassBatch(const ForwardBatch& batch, int pass) override {
    ForwardBatch b = batch;
    for (int32_t& s : b.slots) s = 1;  // a slot of its own, not kept
    b.persist_kv = false;
    return b;
  }
  absl::Status Combine(Backend& backend, const std::vector<TensorView>& passes,
                       TensorView out) override {
    return backend.Add({passes[0], passes[1], out});
  }
};

class ExitAfterFirstLayer : public StepPolicy, public LayerHook {
 public:
  ForwardHooks PassHooks(int) override {
    ForwardHooks hooks;
    hooks.layer = this;
    hooks.check_agreement = true;
    return hooks;
  }
  absl::StatusOr<LayerAction> AfterLayer(const LayerContext& ctx) override {
    return ctx.layer == 0 ? LayerAction::Exit() : LayerAction::Continue();
  }
};

// Per logit row: the largest logit and its id, as two words.
StepReduction TopLogit(LlamaModel& model) {
  StepReduction r;
  r.words_per_row = 2;
  r.reduce = [&model](size_t, const ForwardBatch&,
                      const ForwardOutput& out) -> absl::StatusOr<std::vector<float>> {
    ASSIGN_OR_RETURN(std::vector<VocabRowStats> stats, model.vocab().Stats(out.logits));
    std::vector<float> words;
    for (const VocabRowStats& s : stats) {
      words.push_back(s.top1_logit);
      words.push_back(static_cast<float>(s.top1));
    }
    return words;
  };
  return r;
}

absl::Status CheckTwoPasses(ProcessGroups& groups) {
  ASSIGN_OR_RETURN(auto fixture, SafetensorsFile::Open(absl::StrCat(
                                     "tests/fixtures/forward_hooks/", kModel, ".safetensors")));
  const std::vector<int32_t> prompt = testing::ReadIds(*fixture, "prompt_ids");
  ASSIGN_OR_RETURN(auto backend, MakeBackend(BackendKind::kCpu));
  ASSIGN_OR_RETURN(auto model,
                   LlamaModel::Load(absl::StrCat("tests/fixtures/models/", kModel), backend.get(),
                                    {groups.layout, groups.tp.get(), groups.pp.get()}));
  ASSIGN_OR_RETURN(auto cache, model->MakeCache(2, prompt.size()));
  const ForwardBatch batch = testing::AllPositions(prompt);
  ASSIGN_OR_RETURN(const std::vector<float> once, StepEngine(model.get()).Run({batch}, *cache,
                                                                              TopLogit(*model)));
  cache->Clear(0);
  ScratchSecondPass policy;
  ASSIGN_OR_RETURN(const std::vector<float> twice,
                   StepEngine(model.get(), &policy).Run({batch}, *cache, TopLogit(*model)));
  const std::string me = groups.layout.Prefix();
  for (size_t r = 0; r < prompt.size(); ++r) {
    if (twice[2 * r] != 2.0f * once[2 * r] || twice[2 * r + 1] != once[2 * r + 1]) {
      return absl::InternalError(absl::StrCat(me, "row ", r, ": two passes gave ", twice[2 * r],
                                              " (id ", twice[2 * r + 1], "), one pass ",
                                              once[2 * r], " (id ", once[2 * r + 1], ")"));
    }
  }
  for (int64_t l = 0; l < cache->layers(); ++l) {
    if (cache->length(l, 1) != 0 || cache->length(l, 0) != static_cast<int32_t>(prompt.size())) {
      return absl::InternalError(me + "the scratch pass kept K/V, or the first pass lost it");
    }
  }
  return absl::OkStatus();
}

absl::Status CheckExitWords(ProcessGroups& groups) {
  ASSIGN_OR_RETURN(auto fixture, SafetensorsFile::Open(absl::StrCat(
                                     "tests/fixtures/forward_hooks/", kModel, ".safetensors")));
  const std::vector<int32_t> prompt = testing::ReadIds(*fixture, "prompt_ids");
  ASSIGN_OR_RETURN(auto backend, MakeBackend(BackendKind::kCpu));
  ModelOptions options;
  options.head_after_layers = {0};
  ASSIGN_OR_RETURN(auto model,
                   LlamaModel::Load(absl::StrCat("tests/fixtures/models/", kModel), backend.get(),
                                    {groups.layout, groups.tp.get(), groups.pp.get()}, options));
  ASSIGN_OR_RETURN(auto cache, model->MakeCache(1, prompt.size()));
  ExitAfterFirstLayer policy;
  ASSIGN_OR_RETURN(const std::vector<float> words,
                   StepEngine(model.get(), &policy)
                       .Run({testing::AllPositions(prompt)}, *cache, TopLogit(*model)));
  const TensorEntry& want = fixture->tensors().at("exit.0.logits");
  const float* logits = reinterpret_cast<const float*>(want.data);
  const int64_t vocab = want.shape[1];
  for (size_t r = 0; r < prompt.size(); ++r) {
    const float* row = logits + r * vocab;
    const int64_t argmax = std::max_element(row, row + vocab) - row;
    if (static_cast<int64_t>(words[2 * r + 1]) != argmax) {
      return absl::InternalError(absl::StrCat(groups.layout.Prefix(), "row ", r, ": id ",
                                              words[2 * r + 1], ", transformers' argmax ", argmax));
    }
  }
  return absl::OkStatus();
}

class StepEngineTest : public ::testing::TestWithParam<Layout> {
 protected:
  void Run(absl::Status (*check)(ProcessGroups&)) {
    const std::vector<absl::Status> statuses =
        testing::RunThreadedWorld({GetParam().tp, GetParam().pp, 1, 0}, check);
    for (const absl::Status& s : statuses) EXPECT_OK(s);
  }
};

TEST_P(StepEngineTest, TwoPassesCombine) { Run(CheckTwoPasses); }
TEST_P(StepEngineTest, WordsOfAnExitReachEveryRank) { Run(CheckExitWords); }

INSTANTIATE_TEST_SUITE_P(Layouts, StepEngineTest,
                         ::testing::Values(Layout{1, 1}, Layout{2, 1}, Layout{1, 2}, Layout{2, 2}),
                         [](const ::testing::TestParamInfo<Layout>& info) {
                           return absl::StrCat("tp", info.param.tp, "_pp", info.param.pp);
                         });

}  // namespace
}  // namespace tessera
