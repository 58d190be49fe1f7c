// Test harness for HarpRunner: generation of the embedded model's code prompts through the
// Generator with HARP (or the plain runtime), on one rank or on this rank's shard of a layout.
#ifndef TESSERA_TESTS_METHODS_HARP_HARP_HARNESS_H_
#define TESSERA_TESTS_METHODS_HARP_HARP_HARNESS_H_

#include <vector>

#include "absl/status/statusor.h"
#include "configs/method_settings.pb.h"
#include "methods/harp/harp_runner.h"
#include "parallel/process_groups.h"
#include "runtime/generator.h"

namespace tessera::testing {

struct HarpRun {
  std::vector<GenerationResult> results;  // per request
  std::vector<HarpDecision> decisions;    // every check, in order (empty for the plain run)
};

struct HarpRunSpec {
  const config::HarpSettings* settings = nullptr;  // null: the plain runtime
  std::vector<GenerationRequest> requests;
  int32_t max_batch = 4;
  int32_t micro_batches = 0;
  HarpRunnerOptions extra;  // check_agreement and the test hooks (settings are taken from above)
};

// Generates `spec.requests` on `backend` (one rank when `groups` is null).
absl::StatusOr<HarpRun> GenerateWithHarp(Backend* backend, ProcessGroups* groups,
                                         const HarpRunSpec& spec);

config::HarpSettings HarpSettings(float theta_bits, float delta, float beta);

// The early-exit harness's code prompts (BOS first) as requests of `new_tokens` tokens, EOS
// ignored, with `sampling` (greedy by default); ids 0, 1, ...
std::vector<GenerationRequest> CodeRequests(int32_t new_tokens, SamplingParams sampling = {});

// The named counter of a result (0 when absent).
double Counter(const GenerationResult& r, const char* name);

}  // namespace tessera::testing

#endif  // TESSERA_TESTS_METHODS_HARP_HARP_HARNESS_H_
