// HOMER on the guarded device backend (tests/runtime/guarded_device_backend.h: CPU math behind
// memory the host cannot touch) gives the CPU backend's keep-set, logits and generated tokens:
// the children's hidden rows, the scores, the merge (Average, CopyEntries), the compaction and
// the copy into the generator's cache all go through backend ops and copies.
#include "gtest/gtest.h"
#include "kernels/status_macros.h"
#include "methods/homer/homer_runner.h"
#include "runtime/generator.h"
#include "tests/methods/homer/homer_harness.h"
#include "tests/runtime/guarded_device_backend.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

struct Outcome {
  std::vector<int32_t> source;
  std::vector<float> logits;
  std::vector<int32_t> tokens;
};

absl::StatusOr<Outcome> RunOn(Backend* backend) {
  ASSIGN_OR_RETURN(auto model, testing::LoadHomerModel(backend, nullptr));
  const homer::BiasTable bias = testing::RampBias(8, 4096);
  const std::vector<int32_t> prompt = testing::RandomPrompt(900, 31);
  homer::PrefillOptions options;
  options.schedule = {128, 128, 2, 8};
  options.bias = &bias;
  homer::HomerPrefill prefill(model.get(), options);
  ASSIGN_OR_RETURN(const homer::PrefillResult r, prefill.Run(prompt, 8, 8));
  Outcome out;
  out.source = r.source;
  ASSIGN_OR_RETURN(out.logits, testing::ToHost(*backend, r.logits));
  config::HomerSettings s;
  s.set_max_chunk_len(128);
  s.set_target_len(128);
  s.set_layers_warmup(2);
  s.set_prefix_len(8);
  s.set_suffix_len(8);
  homer::HomerRunner runner(model.get(), homer::ResolveSettings(s, model->config()),
                            std::make_unique<homer::BiasTable>(bias));
  GeneratorOptions generation;
  generation.runner = &runner;
  Generator generator(model.get(), nullptr, generation);
  GenerationRequest request;
  request.prompt_ids = prompt;
  request.max_new_tokens = 8;
  request.ignore_eos = true;
  ASSIGN_OR_RETURN(auto results, generator.Generate({request}));
  out.tokens = results[0].token_ids;
  return out;
}

TEST(HomerDevicePathTest, GivesTheCpuBackendsKeepSetLogitsAndTokens) {
  ASSERT_OK_AND_ASSIGN(auto cpu, MakeBackend(BackendKind::kCpu));
  testing::GuardedDeviceBackend device;
  ASSERT_OK_AND_ASSIGN(const Outcome want, RunOn(cpu.get()));
  ASSERT_OK_AND_ASSIGN(const Outcome got, RunOn(&device));
  EXPECT_EQ(got.source, want.source);
  EXPECT_EQ(got.logits, want.logits);
  EXPECT_EQ(got.tokens, want.tokens);
  EXPECT_EQ(want.source.size(), 128u);
}

}  // namespace
}  // namespace tessera
