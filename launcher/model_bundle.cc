#include "launcher/model_bundle.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/flags/flag.h"
#include "kernels/status_macros.h"
#include "launcher/flags.h"
#if defined(TESSERA_WITH_CUDA)
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/device_assignment.h"
#endif

namespace tessera {

namespace {

absl::StatusOr<ModelBundle> LoadOnThisRank(const std::string& dir, const std::string& backend_name,
                                           bool require_tokenizer, const ModelParallelism& parallel,
                                           int local_rank) {
  if (dir.empty()) return absl::InvalidArgumentError("--model is required (a model directory)");
  if (!std::filesystem::is_directory(dir)) {
    return absl::NotFoundError(absl::StrCat("--model: ", dir, " is not a directory"));
  }
  BackendKind kind;
  if (backend_name == "cpu") {
    kind = BackendKind::kCpu;
  } else if (backend_name == "cuda") {
    kind = BackendKind::kCuda;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--backend: \"", backend_name, "\" is not a backend; use cpu or cuda"));
  }
  ModelBundle b;
  ASSIGN_OR_RETURN(b.backend, MakeBackend(kind, local_rank));
  ASSIGN_OR_RETURN(b.model, LlamaModel::Load(dir, b.backend.get(), parallel));
  if (absl::GetFlag(FLAGS_cuda_graphs)) RETURN_IF_ERROR(b.model->EnableDecodeGraphs(true));
  const std::string sp_path = (std::filesystem::path(dir) / "tokenizer.model").string();
  if (std::filesystem::exists(sp_path)) {
    ASSIGN_OR_RETURN(b.tokenizer, Tokenizer::Load(sp_path));
    if (b.tokenizer->vocab_size() > b.model->config().vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          sp_path, " has ", b.tokenizer->vocab_size(), " pieces but config.json vocab_size is ",
          b.model->config().vocab_size));
    }
  } else if (require_tokenizer) {
    return absl::NotFoundError(absl::StrCat(sp_path, " is missing; text prompts need a "
                                                     "SentencePiece tokenizer.model"));
  }
  return b;
}

// On GPUs, no two ranks of one host may share a device: gather (host, PCI bus id) from all.
absl::Status CheckDistinctDevices(Job& job, Backend& backend) {
#if defined(TESSERA_WITH_CUDA)
  Communicator& world = *job.groups.world;
  if (backend.kind() != BackendKind::kCuda || world.size() == 1) return absl::OkStatus();
  constexpr int kField = 64;
  char mine[2 * kField] = {};
  gethostname(mine, kField - 1);
  const std::string& bus = static_cast<CudaBackend&>(backend).pci_bus_id();
  std::strncpy(mine + kField, bus.c_str(), kField - 1);
  std::vector<char> all(2 * kField * world.size());
  RETURN_IF_ERROR(world.AllGather(TensorView::Of(mine, DType::kU8, {2 * kField}),
                                  TensorView::Of(all.data(), DType::kU8,
                                                 {static_cast<int64_t>(all.size())})));
  std::vector<std::string> hosts, buses;
  for (int r = 0; r < world.size(); ++r) {
    hosts.emplace_back(all.data() + 2 * kField * r);
    buses.emplace_back(all.data() + 2 * kField * r + kField);
  }
  return cuda::CheckDistinctDevices(hosts, buses);
#else
  (void)job;
  (void)backend;
  return absl::OkStatus();
#endif
}

}  // namespace

absl::StatusOr<ModelBundle> LoadModelForJob(Job& job, const std::string& dir,
                                            const std::string& backend_name,
                                            bool require_tokenizer,
                                            const ModelParallelism& parallel) {
  absl::StatusOr<ModelBundle> b =
      LoadOnThisRank(dir, backend_name, require_tokenizer, parallel, job.local_rank);
  RETURN_IF_ERROR(CheckPhase(job, b.status()));
  RETURN_IF_ERROR(CheckPhase(job, CheckDistinctDevices(job, *b->backend)));
  if (job.layout().world_size() > 1) {  // what each rank read: ~1/tp of its stage's layers
    const LlamaWeights& w = b->model->weights();
    const ShardPlan& plan = b->model->plan();
    std::fprintf(stderr,
                 "%sloaded %.1f MB of weights: layers %lld-%lld, %.1f MB of %.1f MB of those "
                 "layers (%.1f%%)\n",
                 job.layout().Prefix().c_str(), w.bytes / 1e6,
                 static_cast<long long>(plan.layer_begin), static_cast<long long>(plan.layer_end - 1),
                 w.layer_bytes / 1e6, w.stage_layer_bytes / 1e6,
                 100.0 * w.layer_bytes / std::max<size_t>(1, w.stage_layer_bytes));
  }
  return b;
}

}  // namespace tessera
