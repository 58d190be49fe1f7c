#include "launcher/model_from_flags.h"

#include "absl/flags/flag.h"
#include "kernels/status_macros.h"
#include "launcher/flags.h"
#include "launcher/methods/run_methods.h"

namespace tessera {

absl::StatusOr<ModelBundle> LoadModelFromFlags(Job& job, const config::MethodSettings& settings,
                                               bool require_tokenizer) {
  absl::StatusOr<std::vector<int64_t>> stage_layers = StageLayersFromFlags();
  RETURN_IF_ERROR(CheckPhase(job, stage_layers.status()));
  ModelParallelism parallel{job.layout(), job.groups.tp.get(), job.groups.pp.get(), *stage_layers};
  absl::StatusOr<DType> kv_dtype = KvDTypeFromFlags();
  RETURN_IF_ERROR(CheckPhase(job, kv_dtype.status()));
  parallel.kv_dtype = *kv_dtype;
  absl::StatusOr<RunMethods> methods = PrepareMethods(
      settings, absl::GetFlag(FLAGS_model), absl::GetFlag(FLAGS_check_rank_agreement));
  RETURN_IF_ERROR(CheckPhase(job, methods.status()));
  ASSIGN_OR_RETURN(ModelBundle bundle,
                   LoadModelForJob(job, absl::GetFlag(FLAGS_model), absl::GetFlag(FLAGS_backend),
                                   require_tokenizer, parallel, methods->options));
  bundle.methods = *std::move(methods);
  RETURN_IF_ERROR(CheckPhase(job, AttachMethods(bundle.methods, *bundle.model)));
  return bundle;
}

}  // namespace tessera
