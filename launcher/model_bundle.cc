#include "launcher/model_bundle.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/flags/flag.h"
#include "absl/time/time.h"
#include "kernels/status_macros.h"
#include "launcher/flags.h"
#if defined(TESSERA_WITH_CUDA)
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/device_assignment.h"
#endif
#if defined(TESSERA_WITH_NCCL)
#include "parallel/nccl_communicator.h"
#endif

namespace tessera {

namespace {

absl::StatusOr<std::unique_ptr<Backend>> MakeBackendForRank(const std::string& backend_name,
                                                            int local_rank) {
  if (backend_name == "cpu") return MakeBackend(BackendKind::kCpu, local_rank);
  if (backend_name == "cuda") {
    absl::StatusOr<std::unique_ptr<Backend>> b = MakeBackend(BackendKind::kCuda, local_rank);
    // "No device" is this rank's condition, not a failed peer: CheckPhase aborts the job at once
    // on Unavailable, so report it as a failed precondition that the ranks agree on.
    if (absl::IsUnavailable(b.status())) return absl::FailedPreconditionError(b.status().message());
    return b;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--backend: \"", backend_name, "\" is not a backend; use cpu or cuda"));
}

absl::Status LoadOnThisRank(const std::string& dir, bool require_tokenizer,
                            const ModelParallelism& parallel, const ModelOptions& options,
                            ModelBundle& b) {
  ASSIGN_OR_RETURN(b.model, LlamaModel::Load(dir, b.backend.get(), parallel, options));
  if (absl::GetFlag(FLAGS_cuda_graphs)) RETURN_IF_ERROR(b.model->EnableDecodeGraphs(true));
  const std::string sp_path = (std::filesystem::path(dir) / "tokenizer.model").string();
  std::error_code ec;
  if (std::filesystem::exists(sp_path, ec)) {
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
  return absl::OkStatus();
}

// An NCCL communicator over `group` on this rank's device, timed; null for a missing or
// one-rank group or a CPU backend. Collective over `group`.
absl::StatusOr<std::unique_ptr<TimedCommunicator>> DeviceCommunicator(Communicator* group,
                                                                      Backend& backend) {
  if (group == nullptr || group->size() == 1 || backend.kind() != BackendKind::kCuda) {
    return std::unique_ptr<TimedCommunicator>();
  }
#if defined(TESSERA_WITH_CUDA) && defined(TESSERA_WITH_NCCL)
  const int device = static_cast<CudaBackend&>(backend).device_index();
  ASSIGN_OR_RETURN(std::unique_ptr<Communicator> nccl,
                   NcclCommunicator::CreateFromMpi(
                       *group, device, absl::Seconds(absl::GetFlag(FLAGS_comm_timeout_s))));
  return std::make_unique<TimedCommunicator>(std::move(nccl));
#else
  return absl::UnimplementedError(absl::StrCat(
      "the ", group->name(), " group has ", group->size(),
      " ranks on the CUDA backend, which needs NCCL, and this build has no NCCL (install it "
      "where the CUDA toolkit is and rebuild, or run with tensor and pipeline size 1 per GPU)"));
#endif
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
                                            const ModelParallelism& parallel,
                                            const ModelOptions& options) {
  if (dir.empty()) {
    return CheckPhase(job, absl::InvalidArgumentError("--model is required (a model directory)"));
  }
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    return CheckPhase(job, absl::NotFoundError(absl::StrCat(
                               "--model: ", dir, " is not a directory; give the model directory "
                               "(config.json, *.safetensors, tokenizer.model)")));
  }
  ModelBundle b;
  absl::StatusOr<std::unique_ptr<Backend>> backend = MakeBackendForRank(backend_name, job.local_rank);
  RETURN_IF_ERROR(CheckPhase(job, backend.status()));
  b.backend = *std::move(backend);
  RETURN_IF_ERROR(CheckPhase(job, CheckDistinctDevices(job, *b.backend)));
  // On GPUs the model's groups carry device buffers: NCCL over the tp group, then the pp group
  // (every rank creates them in this order).
  ModelParallelism on_device = parallel;
  for (auto [group, device_comm] : {std::pair{parallel.tp, &b.device_tp},
                                    std::pair{parallel.pp, &b.device_pp}}) {
    absl::StatusOr<std::unique_ptr<TimedCommunicator>> comm =
        DeviceCommunicator(group, *b.backend);
    RETURN_IF_ERROR(CheckPhase(job, comm.status()));
    *device_comm = *std::move(comm);
  }
  if (b.device_tp != nullptr) on_device.tp = b.device_tp.get();
  if (b.device_pp != nullptr) on_device.pp = b.device_pp.get();
  RETURN_IF_ERROR(CheckPhase(job, LoadOnThisRank(dir, require_tokenizer, on_device, options, b)));
  if (job.layout().world_size() > 1) {  // what each rank read: ~1/tp of its stage's layers
    const LlamaWeights& w = b.model->weights();
    const ShardPlan& plan = b.model->plan();
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
