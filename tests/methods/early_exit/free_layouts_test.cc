// FreeRunner at every layout, ranks as threads, against one rank:
// - tp 2 and 4 (four ranks share two KV heads), pp 2 with the exit inside stage 0, on the stage
//   boundary and inside stage 1, and tp2 x pp2, with two micro-batches under pp: the free-running
//   decisions and tokens equal one rank's on every rank, with --check-rank-agreement on;
// - decisions recorded at one rank and replayed give the same tokens;
// - after a flush, every stage's cache holds every fed token in every layer;
// - a stage that runs the exit without a head is refused, naming the stage.
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/status_macros.h"
#include "tests/layouts/threaded_world.h"
#include "tests/methods/early_exit/free_harness.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using testing::Decode;
using testing::Decoded;
using testing::DecodeOptions;
using testing::FreeSettings;
using testing::LoadTinyModel;
using testing::TinyPrompts;

constexpr float kTau = 0.5f;

struct Reference {
  Decoded decoded;
  std::vector<uint8_t> decisions;
};

Reference OneRank(int exit_layer) {
  auto backend = MakeBackend(BackendKind::kCpu);
  auto model = LoadTinyModel(backend->get(), nullptr, exit_layer);
  auto cache = (*model)->MakeCache(3, 256);
  auto runner = FreeRunner::Create(model->get(), {FreeSettings(exit_layer, kTau)});
  DecodeOptions options;
  options.steps = 14;
  auto decoded = Decode(**model, **cache, **runner, runner->get(), TinyPrompts(), options);
  EXPECT_TRUE(decoded.ok()) << decoded.status();
  return {*decoded, (*runner)->decisions()};
}

struct Layout {
  int tp, pp;
};

// Runs FREE on every rank of `layout` (replaying `replay` when not empty) and checks each rank's
// tokens and decisions against `want`.
void CheckLayout(Layout layout, int exit_layer, const Reference& want,
                 const std::vector<uint8_t>& replay) {
  SCOPED_TRACE(absl::StrCat("tp ", layout.tp, " pp ", layout.pp, " exit_layer ", exit_layer,
                            replay.empty() ? "" : " replayed"));
  const auto statuses = testing::RunThreadedWorld(
      {layout.tp, layout.pp, 1, 0}, [&](ProcessGroups& groups) -> absl::Status {
        ASSIGN_OR_RETURN(auto backend, MakeBackend(BackendKind::kCpu));
        ASSIGN_OR_RETURN(auto model, LoadTinyModel(backend.get(), &groups, exit_layer));
        ASSIGN_OR_RETURN(auto cache, model->MakeCache(3, 256));
        FreeRunnerOptions options{FreeSettings(exit_layer, kTau)};
        options.check_agreement = true;
        options.forced_decisions = replay;
        ASSIGN_OR_RETURN(auto runner, FreeRunner::Create(model.get(), options));
        DecodeOptions decode;
        decode.steps = 14;
        decode.micro_batches = layout.pp;
        decode.flush = true;
        ASSIGN_OR_RETURN(Decoded got,
                         Decode(*model, *cache, *runner, runner.get(), TinyPrompts(), decode));
        const std::string rank = absl::StrCat("rank ", groups.layout.rank, ": ");
        if (got.tokens != want.decoded.tokens) return absl::InternalError(rank + "tokens differ");
        if (runner->decisions() != want.decisions) {
          return absl::InternalError(rank + "decisions differ");
        }
        for (int64_t l = 0; l < cache->layers(); ++l) {
          for (int32_t slot = 0; slot < 3; ++slot) {
            const int32_t fed = static_cast<int32_t>(TinyPrompts()[slot].size()) + decode.steps - 1;
            if (cache->length(l, slot) != fed) {
              return absl::InternalError(absl::StrCat(rank, "layer ", l, " slot ", slot, " holds ",
                                                      cache->length(l, slot), " entries, want ",
                                                      fed));
            }
          }
        }
        return absl::OkStatus();
      });
  for (size_t r = 0; r < statuses.size(); ++r) {
    SCOPED_TRACE(absl::StrCat("rank ", r));
    EXPECT_OK(statuses[r]);
  }
}

TEST(FreeLayoutsTest, EveryLayoutDecidesAndEmitsAsOneRank) {
  for (int exit_layer : {2, 4, 6}) {
    const Reference want = OneRank(exit_layer);
    int exits = 0;
    for (uint8_t d : want.decisions) exits += d;
    ASSERT_GT(exits, 0) << "exit_layer " << exit_layer << ": the test needs exits";
    ASSERT_LT(exits, static_cast<int>(want.decisions.size())) << "and deep steps";
    for (Layout layout : {Layout{2, 1}, Layout{4, 1}, Layout{1, 2}, Layout{2, 2}}) {
      if (layout.tp == 4 && exit_layer != 2) continue;  // tp4 once is enough for the time it takes
      CheckLayout(layout, exit_layer, want, {});
      if (layout.tp == 2 && layout.pp == 2) CheckLayout(layout, exit_layer, want, want.decisions);
    }
  }
}

TEST(FreeLayoutsTest, AStageWithoutAHeadIsRefused) {
  const auto statuses = testing::RunThreadedWorld({1, 2, 1, 0}, [](ProcessGroups& groups) {
    return [&]() -> absl::Status {
      ASSIGN_OR_RETURN(auto backend, MakeBackend(BackendKind::kCpu));
      ASSIGN_OR_RETURN(auto model, LoadTinyModel(backend.get(), &groups, /*exit_layer=*/0));
      return FreeRunner::Create(model.get(), {FreeSettings(2, kTau)}).status();
    }();
  });
  EXPECT_EQ(statuses[0].code(), absl::StatusCode::kFailedPrecondition) << statuses[0];
  EXPECT_NE(statuses[0].message().find("pipeline stage 0 holds no head"), std::string::npos);
  EXPECT_OK(statuses[1]);  // stage 1 runs no exit
}

}  // namespace
}  // namespace tessera
