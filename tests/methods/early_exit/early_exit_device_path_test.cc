// FREE (with flush and an adaptive threshold) and CALM (with a reduced vocabulary) on the guarded
// device backend (tests/runtime/guarded_device_backend.h: CPU math behind memory the host cannot
// touch) give the CPU backend's tokens and decisions: every buffer the runners keep (saved
// residual streams, deep-pass inputs, reduced logits) lives in backend memory and is reached only
// through backend ops and copies.
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/status_macros.h"
#include "methods/early_exit/calm_runner.h"
#include "tests/methods/early_exit/free_harness.h"
#include "tests/runtime/guarded_device_backend.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using config::EarlyExitSettings;
using testing::Decode;
using testing::Decoded;
using testing::DecodeOptions;

struct Outcome {
  Decoded decoded;
  std::vector<uint8_t> decisions;
};

absl::StatusOr<Outcome> RunOn(Backend* backend, const EarlyExitSettings& s) {
  ModelOptions options;
  if (s.policy() == EarlyExitSettings::CALM) {
    for (int32_t c : s.check_layers()) options.head_after_layers.push_back(c - 1);
  } else {
    options.head_after_layers = {s.exit_layer() - 1};
  }
  ASSIGN_OR_RETURN(auto model, LlamaModel::Load(testing::kTinyModel, backend, {}, options));
  ASSIGN_OR_RETURN(auto cache, model->MakeCache(3, 128));
  DecodeOptions decode;
  decode.steps = 12;
  Outcome r;
  if (s.policy() == EarlyExitSettings::CALM) {
    ASSIGN_OR_RETURN(auto runner, CalmRunner::Create(model.get(), {s}));
    ASSIGN_OR_RETURN(r.decoded, Decode(*model, *cache, *runner, nullptr, testing::TinyPrompts(),
                                       decode));
    r.decisions = runner->decisions();
  } else {
    decode.flush = true;
    ASSIGN_OR_RETURN(auto runner, FreeRunner::Create(model.get(), {s}));
    ASSIGN_OR_RETURN(r.decoded, Decode(*model, *cache, *runner, runner.get(),
                                       testing::TinyPrompts(), decode));
    r.decisions = runner->decisions();
  }
  return r;
}

TEST(EarlyExitDevicePathTest, RunnersGiveTheCpuBackendsTokensAndDecisions) {
  EarlyExitSettings free = testing::FreeSettings(2, 0.5f);
  EarlyExitSettings adaptive = testing::FreeSettings(4, 0.6f);
  adaptive.set_adaptive_threshold(true);
  EarlyExitSettings calm;
  calm.set_policy(EarlyExitSettings::CALM);
  calm.set_threshold(0.5f);
  for (int32_t c : {2, 4, 6}) calm.add_check_layers(c);
  calm.set_vocab_reduction(EarlyExitSettings::VOCAB_ADAPTIVE);
  for (const EarlyExitSettings& s : {free, adaptive, calm}) {
    SCOPED_TRACE(s.ShortDebugString());
    ASSERT_OK_AND_ASSIGN(auto cpu, MakeBackend(BackendKind::kCpu));
    testing::GuardedDeviceBackend device;
    ASSERT_OK_AND_ASSIGN(Outcome want, RunOn(cpu.get(), s));
    ASSERT_OK_AND_ASSIGN(Outcome got, RunOn(&device, s));
    EXPECT_EQ(got.decoded.tokens, want.decoded.tokens);
    EXPECT_EQ(got.decisions, want.decisions);
    int exits = 0;
    for (uint8_t d : want.decisions) exits += d;
    EXPECT_GT(exits, 0);
  }
}

}  // namespace
}  // namespace tessera
