// The model of a command that takes --model, --backend, the layout flags and a run config's
// method section (generate, serve): every rank loads its shard with the methods attached, each
// phase agreed on by all ranks (CheckPhase).
#ifndef TESSERA_LAUNCHER_MODEL_FROM_FLAGS_H_
#define TESSERA_LAUNCHER_MODEL_FROM_FLAGS_H_

#include "absl/status/statusor.h"
#include "configs/method_settings.pb.h"
#include "launcher/job.h"
#include "launcher/model_bundle.h"

namespace tessera {

absl::StatusOr<ModelBundle> LoadModelFromFlags(Job& job, const config::MethodSettings& methods,
                                               bool require_tokenizer);

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_MODEL_FROM_FLAGS_H_
