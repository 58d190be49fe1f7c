// FreeRunner at every layout, ranks as threads, against one rank:
// - tp 2 and 4 (four ranks share two KV heads), pp 2 with the exit inside stage 0, on the stage
//   boundary and inside stage 1, and tp2 x pp2, with two micro-batches under pp: the free-running
//   decisions and tokens equal one rank's on every rank, with --check-rank-agreement on;
// - decisions recorded at one rank and replayed give the same tokens;
// - after a flush, every stage's cache holds every fed token in every layer;
// - with last-bit noise injected into each rank's hidden states, the ranks still agree;
// - the adaptive threshold takes the same values, request by request, at tp2 x pp2 as on one rank;
// - a stage that runs the exit without a head is refused, naming the stage.
#include <cstring>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "runtime/generator.h"
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

// Flips the lowest mantissa bit of some embedding values, in a pattern that depends on the rank.
class LastBitNoise : public InputHook {
 public:
  explicit LastBitNoise(int rank) : rank_(rank) {}
  absl::Status OnEmbeddings(const LayerContext& ctx) override {
    float* x = ctx.hidden.as<float>();
    for (int64_t i = 0; i < ctx.hidden.numel(); ++i) {
      if ((i + rank_) % 3 != 0) continue;
      uint32_t bits;
      std::memcpy(&bits, &x[i], 4);
      bits ^= 1u;
      std::memcpy(&x[i], &bits, 4);
    }
    return absl::OkStatus();
  }

 private:
  int rank_;
};

TEST(FreeLayoutsTest, RanksAgreeDespiteLastBitNoiseInTheirHiddenStates) {
  for (int tp : {2, 4}) {
    std::mutex mu;
    std::vector<Decoded> per_rank(tp);
    const auto statuses = testing::RunThreadedWorld({tp, 1, 1, 0}, [&](ProcessGroups& groups) {
      return [&]() -> absl::Status {
        ASSIGN_OR_RETURN(auto backend, MakeBackend(BackendKind::kCpu));
        ASSIGN_OR_RETURN(auto model, LoadTinyModel(backend.get(), &groups, 2));
        ASSIGN_OR_RETURN(auto cache, model->MakeCache(3, 256));
        LastBitNoise noise(groups.layout.rank);
        FreeRunnerOptions options{FreeSettings(2, kTau)};
        options.check_agreement = true;
        options.input_hook = &noise;
        ASSIGN_OR_RETURN(auto runner, FreeRunner::Create(model.get(), options));
        DecodeOptions decode;
        decode.steps = 14;
        ASSIGN_OR_RETURN(Decoded got,
                         Decode(*model, *cache, *runner, runner.get(), TinyPrompts(), decode));
        std::lock_guard<std::mutex> lock(mu);
        per_rank[groups.layout.rank] = got;
        return absl::OkStatus();
      }();
    });
    for (int r = 0; r < tp; ++r) {
      EXPECT_OK(statuses[r]);
      EXPECT_EQ(per_rank[r].tokens, per_rank[0].tokens) << "tp " << tp << " rank " << r;
    }
  }
}

// Sequential requests through the Generator with an adaptive threshold: each request's tau.
absl::StatusOr<std::vector<double>> AdaptiveThresholds(ProcessGroups* groups) {
  ASSIGN_OR_RETURN(auto backend, MakeBackend(BackendKind::kCpu));
  ASSIGN_OR_RETURN(auto model, LoadTinyModel(backend.get(), groups, 2));
  config::EarlyExitSettings settings = FreeSettings(2, 0.9f);
  settings.set_adaptive_threshold(true);
  FreeRunnerOptions options{settings};
  options.check_agreement = true;
  ASSIGN_OR_RETURN(auto runner, FreeRunner::Create(model.get(), options));
  std::vector<GenerationRequest> requests;
  for (int copy = 0; copy < 3; ++copy) {
    for (const auto& prompt : TinyPrompts()) {
      GenerationRequest r;
      r.prompt_ids = prompt;
      r.prompt_ids.push_back(100 + copy);
      r.max_new_tokens = 16;
      r.ignore_eos = true;
      requests.push_back(r);
    }
  }
  Generator generator(model.get(), nullptr, {.max_batch = 1, .runner = runner.get()});
  ASSIGN_OR_RETURN(auto results, generator.Generate(requests));
  std::vector<double> taus;
  for (const GenerationResult& r : results) taus.push_back(r.counters.values.at("threshold"));
  if (runner->calibration().size() == 0) return absl::InternalError("no calibration pair");
  return taus;
}

TEST(FreeLayoutsTest, AdaptiveThresholdIsTheSameAtEveryLayout) {
  ASSERT_OK_AND_ASSIGN(const std::vector<double> want, AdaptiveThresholds(nullptr));
  EXPECT_EQ(want.front(), 0.9f);  // before the first fit
  const auto grid = BetaMixtureThreshold::Grid();
  bool moved = false;
  for (size_t i = 1; i < want.size(); ++i) {
    const double tau = want[i];
    moved |= tau != want.front();
    if (tau != want.front()) {
      EXPECT_NE(std::find(grid.begin(), grid.end(), tau), grid.end()) << tau;
    }
  }
  EXPECT_TRUE(moved) << "the threshold never left its initial value: " << ::testing::PrintToString(want);
  std::mutex mu;
  std::vector<std::vector<double>> per_rank(4);
  const auto statuses = testing::RunThreadedWorld({2, 2, 1, 0}, [&](ProcessGroups& groups) {
    return [&]() -> absl::Status {
      ASSIGN_OR_RETURN(std::vector<double> taus, AdaptiveThresholds(&groups));
      std::lock_guard<std::mutex> lock(mu);
      per_rank[groups.layout.rank] = taus;
      return absl::OkStatus();
    }();
  });
  for (int r = 0; r < 4; ++r) {
    EXPECT_OK(statuses[r]);
    EXPECT_EQ(per_rank[r], want) << "rank " << r;
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
