// ModelBundle: what a subcommand needs to run a model: the backend, the model, the tokenizer.
#ifndef TESSERA_LAUNCHER_MODEL_BUNDLE_H_
#define TESSERA_LAUNCHER_MODEL_BUNDLE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "launcher/job.h"
#include "launcher/methods/run_methods.h"
#include "parallel/timed_communicator.h"
#include "runtime/llama_model.h"
#include "runtime/tokenizer.h"

namespace tessera {

struct ModelBundle {
  std::unique_ptr<Backend> backend;
  // On GPUs with a multi-rank tensor or pipeline group: NCCL communicators over those groups,
  // which the model uses for its activations and sampling traffic (null otherwise: the model uses
  // the job's groups). Timed, so that `bench` can report the time spent in them. Declared before
  // the model, which refers to them.
  std::unique_ptr<TimedCommunicator> device_tp, device_pp;
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<Tokenizer> tokenizer;  // null when the directory has no tokenizer.model
  // The run's methods, attached to `model` (AttachMethods); declared last so that they release
  // their device buffers before the model and the backend go.
  RunMethods methods;
};

// Every rank of `job` loads its shard of DIR with the backend named by `backend_name` ("cpu" or
// "cuda"; a GPU rank takes the device of its local rank). Phases, each agreed on by all ranks
// (CheckPhase): the backend; on GPUs, that no two ranks of a host share a device, and NCCL
// communicators over the multi-rank groups of `parallel` (bootstrapped through them); the
// weights (with the methods' `options`) and tokenizer. With `require_tokenizer`, a missing DIR/tokenizer.model is an error.
absl::StatusOr<ModelBundle> LoadModelForJob(Job& job, const std::string& dir,
                                            const std::string& backend_name,
                                            bool require_tokenizer,
                                            const ModelParallelism& parallel,
                                            const ModelOptions& options = {});

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_MODEL_BUNDLE_H_
