// Checks of the forward hooks against transformers (tools/reference/forward_hooks.py), run on
// every rank of a world: by forward_hooks_test with ranks as threads and by mpi_layout_test
// --hooks under mpirun. `name` is a fixture model (tests/fixtures/models/NAME) with its
// tests/fixtures/forward_hooks/NAME.safetensors; paths are relative to the repository root.
// - CheckExits: an exit after each layer gives transformers' truncated model's logits on the
//   stage holding the layer (which loaded a head); later stages learn of it from the header and
//   no layer after it keeps K/V of the step.
// - CheckKeepRows: rows kept after layer 1 give transformers' logits for those rows alone, and
//   later layers cache only them.
// - CheckPayload: a method flag and payload word written on stage 0 reach later stages' hooks.
#ifndef TESSERA_TESTS_LAYOUTS_HOOK_CHECKS_H_
#define TESSERA_TESTS_LAYOUTS_HOOK_CHECKS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "parallel/process_groups.h"
#include "runtime/llama_model.h"
#include "runtime/safetensors.h"

namespace tessera::testing {

// The fixture of `name`, the model loaded for this rank with heads after `head_layers`, and a
// cache for the fixture's prompt.
struct HookSetup {
  std::unique_ptr<SafetensorsFile> fixture;
  std::vector<int32_t> prompt;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<KvCache> cache;
};
absl::StatusOr<HookSetup> Prepare(const std::string& name, ProcessGroups& groups,
                                  const std::vector<int64_t>& head_layers);

absl::Status CheckExits(const std::string& name, ProcessGroups& groups);
absl::Status CheckKeepRows(const std::string& name, ProcessGroups& groups);
absl::Status CheckPayload(const std::string& name, ProcessGroups& groups);
// All three.
absl::Status CheckForwardHooks(const std::string& name, ProcessGroups& groups);

}  // namespace tessera::testing

#endif  // TESSERA_TESTS_LAYOUTS_HOOK_CHECKS_H_
