// ModelBundle: what a subcommand needs to run a model: the backend, the model, the tokenizer.
#ifndef TESSERA_LAUNCHER_MODEL_BUNDLE_H_
#define TESSERA_LAUNCHER_MODEL_BUNDLE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "launcher/job.h"
#include "runtime/llama_model.h"
#include "runtime/tokenizer.h"

namespace tessera {

struct ModelBundle {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<Tokenizer> tokenizer;  // null when the directory has no tokenizer.model
};

// Every rank of `job` loads its shard of DIR with the backend named by `backend_name` ("cpu" or
// "cuda"; a GPU rank takes the device of its local rank); the ranks then agree on the outcome
// (CheckPhase) and, on GPUs, check that no two ranks of a host share a device. With
// `require_tokenizer`, a missing DIR/tokenizer.model is an error.
absl::StatusOr<ModelBundle> LoadModelForJob(Job& job, const std::string& dir,
                                            const std::string& backend_name,
                                            bool require_tokenizer,
                                            const ModelParallelism& parallel);

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_MODEL_BUNDLE_H_
