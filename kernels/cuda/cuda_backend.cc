// CudaBackend's life cycle, memory, synchronisation and graph capture. The ops are in
// cuda_ops.cc (hand kernels) and gemm_cublas.cc (GEMM).
#include "kernels/cuda/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/launchers.h"

namespace tessera {
namespace {

std::string GiB(size_t bytes) { return absl::StrFormat("%.2f GiB", bytes / double(1 << 30)); }

std::string VisibleDevicesEnv() {
  const char* v = std::getenv("CUDA_VISIBLE_DEVICES");
  return v == nullptr ? "unset" : v;
}

// Keys per split below which splitting is not worth a merge.
constexpr int64_t kSplitMinKeys = 256;
// Caches shorter than this never split.
constexpr int64_t kSplitMinCache = 512;

}  // namespace

// ---- CudaGraph ----

CudaGraph::CudaGraph(CudaBackend* backend, CUgraphExec_st* exec)
    : backend_(backend), exec_(exec) {
  backend_->scratch_->CaptureCreated();
}

CudaGraph::CudaGraph(CudaGraph&& other) noexcept
    : backend_(other.backend_), exec_(other.exec_) {
  other.exec_ = nullptr;
}

CudaGraph& CudaGraph::operator=(CudaGraph&& other) noexcept {
  if (this != &other) {
    Destroy();
    backend_ = other.backend_;
    exec_ = other.exec_;
    other.exec_ = nullptr;
  }
  return *this;
}

CudaGraph::~CudaGraph() { Destroy(); }

void CudaGraph::Destroy() {
  if (exec_ == nullptr) return;
  cudaGraphExecDestroy(exec_);
  exec_ = nullptr;
  backend_->scratch_->CaptureDestroyed();  // the last graph frees retired scratch
}

namespace {

class CapturedCudaGraph final : public CapturedWork {
 public:
  explicit CapturedCudaGraph(CudaGraph graph) : graph_(std::move(graph)) {}
  absl::Status Replay() override { return graph_.Replay(); }

 private:
  CudaGraph graph_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<CapturedWork>> CudaBackend::Capture::EndCapture() {
  ASSIGN_OR_RETURN(CudaGraph graph, backend_->EndCapture());
  return std::make_unique<CapturedCudaGraph>(std::move(graph));
}

absl::Status CudaGraph::Replay() {
  if (exec_ == nullptr) return absl::FailedPreconditionError("CudaGraph::Replay: empty graph");
  RETURN_IF_ERROR(backend_->RefuseWhileCapturing("CudaGraph::Replay"));
  RETURN_IF_ERROR(backend_->Activate());
  CUDA_RETURN_IF_ERROR(cudaGraphLaunch(exec_, backend_->stream_), "CudaGraph::Replay");
  return absl::OkStatus();
}

// ---- CudaBackend ----

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(int local_rank) {
  if (local_rank < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA backend: local rank must be >= 0, got ", local_rank));
  }
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    cudaGetLastError();
    return absl::UnavailableError(absl::StrCat(
        "no CUDA device: ",
        err != cudaSuccess ? absl::StrCat("cudaGetDeviceCount failed: ", cudaGetErrorName(err),
                                          " (", cudaGetErrorString(err), ")")
                           : std::string("the driver reports 0 devices"),
        "; CUDA_VISIBLE_DEVICES=", VisibleDevicesEnv()));
  }
  std::unique_ptr<CudaBackend> b(new CudaBackend());
  CudaBackend* raw = b.get();
  b->scratch_ = std::make_unique<ScratchArena>(
      kScratchKinds,
      [raw](size_t bytes, absl::string_view what) { return raw->DeviceMalloc(bytes, what); },
      [raw](void* p) {
        if (p == nullptr) return;
        cudaStreamSynchronize(raw->stream_);  // work already enqueued may still use it
        cudaFree(p);
        cudaGetLastError();
      });
  b->visible_devices_ = count;
  b->device_ = local_rank % count;
  const std::string context = absl::StrCat("CUDA backend: device ", b->device_);
  CUDA_RETURN_IF_ERROR(cudaSetDevice(b->device_), context);
  cudaDeviceProp prop;
  CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, b->device_), context);
  b->device_name_ = prop.name;
  b->multiprocessors_ = prop.multiProcessorCount;
  b->total_memory_ = prop.totalGlobalMem;
  char bus_id[64] = {};
  CUDA_RETURN_IF_ERROR(cudaDeviceGetPCIBusId(bus_id, sizeof(bus_id), b->device_), context);
  b->pci_bus_id_ = bus_id;

  cudaStream_t stream = nullptr;
  CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), context);
  b->stream_ = stream;
  void* flags = nullptr;
  CUDA_RETURN_IF_ERROR(cudaHostAlloc(&flags, 64, cudaHostAllocMapped), context);
  b->error_flags_host_ = static_cast<int*>(flags);
  std::memset(flags, 0, 64);
  void* flags_device = nullptr;
  CUDA_RETURN_IF_ERROR(cudaHostGetDevicePointer(&flags_device, flags, 0), context);
  b->error_flags_device_ = static_cast<int*>(flags_device);

  cublasHandle_t handle = nullptr;
  CUBLAS_RETURN_IF_ERROR(cublasCreate(&handle), context);
  b->cublas_ = handle;
  // cublasSetStream resets the workspace, so the workspace is set after it. A fixed workspace
  // also keeps cuBLAS from allocating during graph capture.
  CUBLAS_RETURN_IF_ERROR(cublasSetStream(handle, stream), context);
  ASSIGN_OR_RETURN(b->cublas_workspace_,
                   b->DeviceMalloc(kCublasWorkspaceBytes, "the cuBLAS workspace"));
  CUBLAS_RETURN_IF_ERROR(cublasSetWorkspace(handle, b->cublas_workspace_, kCublasWorkspaceBytes),
                         context);
  return b;
}

CudaBackend::~CudaBackend() {
  if (visible_devices_ == 0) return;
  cudaSetDevice(device_);
  if (capturing_) {
    cudaGraph_t graph = nullptr;
    cudaStreamEndCapture(stream_, &graph);
    if (graph != nullptr) cudaGraphDestroy(graph);
  }
  if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  if (cublas_ != nullptr) cublasDestroy(cublas_);
  scratch_.reset();
  cudaFree(cublas_workspace_);
  if (error_flags_host_ != nullptr) cudaFreeHost(error_flags_host_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
  cudaGetLastError();
}

std::string CudaBackend::Description() const {
  return absl::StrCat(device_name_, ", device ", device_, " of ", visible_devices_,
                      " visible, PCI ", pci_bus_id_, ", ", GiB(total_memory_),
                      " (CUDA_VISIBLE_DEVICES=", VisibleDevicesEnv(), ")");
}

absl::Status CudaBackend::Activate() const {
  int current = -1;
  CUDA_RETURN_IF_ERROR(cudaGetDevice(&current), "CUDA backend");
  if (current != device_) CUDA_RETURN_IF_ERROR(cudaSetDevice(device_), "CUDA backend");
  return absl::OkStatus();
}

absl::Status CudaBackend::RefuseWhileCapturing(absl::string_view what) const {
  if (!capturing_) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      what, " is not allowed during CUDA graph capture (only ops are captured); call EndCapture() "
            "first"));
}

absl::Status CudaBackend::OutOfMemory(size_t bytes, absl::string_view what) const {
  size_t free_bytes = 0, total = 0;
  const cudaError_t err = cudaMemGetInfo(&free_bytes, &total);
  cudaGetLastError();
  return absl::ResourceExhaustedError(absl::StrCat(
      "CUDA backend: cannot allocate ", bytes, " bytes (", GiB(bytes), ") for ", what,
      " on device ", device_, " (", device_name_, ", PCI ", pci_bus_id_, "): ",
      err == cudaSuccess ? absl::StrCat(free_bytes, " bytes (", GiB(free_bytes), ") free of ",
                                        GiB(total))
                         : absl::StrCat("free memory unknown (", cudaGetErrorString(err), ")")));
}

absl::StatusOr<void*> CudaBackend::DeviceMalloc(size_t bytes, absl::string_view what) {
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, std::max<size_t>(bytes, 256));
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // not sticky: clear it so that the next op does not report it
    return OutOfMemory(bytes, what);
  }
  CUDA_RETURN_IF_ERROR(err, absl::StrCat("CUDA backend: cudaMalloc of ", bytes, " bytes for ", what));
  return p;
}

absl::StatusOr<void*> CudaBackend::Allocate(size_t bytes) {
  RETURN_IF_ERROR(RefuseWhileCapturing("Allocate"));
  RETURN_IF_ERROR(Activate());
  ASSIGN_OR_RETURN(void* p, DeviceMalloc(bytes, "a tensor"));
  const std::string context = absl::StrCat("Allocate of ", bytes, " bytes");
  CUDA_RETURN_IF_ERROR(cudaMemsetAsync(p, 0, std::max<size_t>(bytes, 256), stream_), context);
  // The memory may next be used from another stream (a communicator's): finish the fill.
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_), context);
  return p;
}

void CudaBackend::Free(void* pointer) {
  if (pointer == nullptr) return;
  if (!Activate().ok()) return;
  cudaFree(pointer);  // waits for the device first
  cudaGetLastError();
}

absl::Status CudaBackend::CopyToDevice(void* device_dst, const void* host_src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  RETURN_IF_ERROR(RefuseWhileCapturing("CopyToDevice"));
  RETURN_IF_ERROR(Activate());
  const std::string context = absl::StrCat("CopyToDevice of ", bytes, " bytes");
  CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(device_dst, host_src, bytes, cudaMemcpyHostToDevice, stream_), context);
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_), context);
  return absl::OkStatus();
}

absl::Status CudaBackend::CopyWithinDevice(void* device_dst, const void* device_src,
                                           size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  RETURN_IF_ERROR(Activate());
  // Enqueued like an op (and so capturable in a graph): no synchronisation.
  CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(device_dst, device_src, bytes, cudaMemcpyDeviceToDevice, stream_),
      absl::StrCat("CopyWithinDevice of ", bytes, " bytes"));
  return absl::OkStatus();
}

absl::Status CudaBackend::CopyToHost(void* host_dst, const void* device_src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  RETURN_IF_ERROR(RefuseWhileCapturing("CopyToHost"));
  RETURN_IF_ERROR(Activate());
  const std::string context = absl::StrCat("CopyToHost of ", bytes, " bytes");
  CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(host_dst, device_src, bytes, cudaMemcpyDeviceToHost, stream_), context);
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_), context);
  return absl::OkStatus();
}

absl::Status CudaBackend::Synchronize() {
  RETURN_IF_ERROR(RefuseWhileCapturing("Synchronize"));
  RETURN_IF_ERROR(Activate());
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_),
                       "CUDA backend: an op enqueued since the last Synchronize failed");
  volatile int* flags = error_flags_host_;
  const bool kv = flags[cuda::kKvWriteOutOfRange] != 0;
  const bool attention = flags[cuda::kAttentionOutOfRange] != 0;
  const bool gather = flags[cuda::kGatherOutOfRange] != 0;
  for (int f = 0; f < cuda::kErrorFlagCount; ++f) flags[f] = 0;
  if (kv || attention) {
    return absl::OutOfRangeError(absl::StrCat(
        kv ? "KvWrite" : "", kv && attention ? " and " : "", attention ? "Attention" : "",
        " (CUDA backend): a token's cache slot or entry was outside the KV cache; such tokens "
        "were skipped (attention output NaN)"));
  }
  if (gather) {
    return absl::OutOfRangeError(
        "GatherRows (CUDA backend): an index was outside the input rows; those rows were not "
        "written");
  }
  return absl::OkStatus();
}

absl::StatusOr<void*> CudaBackend::ScratchBuffer(Scratch which, size_t bytes,
                                                 absl::string_view op) {
  return scratch_->Get(static_cast<int>(which), bytes, op, capturing_);
}

absl::Status CudaBackend::BeginCapture() {
  RETURN_IF_ERROR(RefuseWhileCapturing("BeginCapture"));
  RETURN_IF_ERROR(Activate());
  CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal),
                       "BeginCapture");
  capturing_ = true;
  return absl::OkStatus();
}

absl::StatusOr<CudaGraph> CudaBackend::EndCapture() {
  if (!capturing_) return absl::FailedPreconditionError("EndCapture without BeginCapture");
  RETURN_IF_ERROR(Activate());
  capturing_ = false;
  cudaGraph_t graph = nullptr;
  CUDA_RETURN_IF_ERROR(cudaStreamEndCapture(stream_, &graph),
                       "EndCapture (an op during the capture may have done something that "
                       "cannot be captured)");
  cudaGraphExec_t exec = nullptr;
  const cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  CUDA_RETURN_IF_ERROR(err, "EndCapture: instantiating the graph");
  return CudaGraph(this, exec);
}

int CudaBackend::AttentionSplits(int64_t n, int64_t heads, int64_t kv_heads,
                                 int64_t max_seq) const {
  if (n <= 0 || kv_heads <= 0 || max_seq < kSplitMinCache) return 1;
  const int64_t rows = n * (heads / kv_heads);
  const int64_t blocks = (rows + cuda::kAttentionRowsPerBlock - 1) / cuda::kAttentionRowsPerBlock *
                         kv_heads;
  if (blocks >= multiprocessors_) return 1;  // the query rows alone fill the GPU
  // About two blocks per multiprocessor, with at least kSplitMinKeys keys per split.
  const int64_t want = (2 * int64_t{multiprocessors_} + blocks - 1) / blocks;
  const int64_t most = max_seq / kSplitMinKeys;
  const int64_t splits = std::min(want, most);
  return splits < 2 ? 1 : static_cast<int>(splits);
}

}  // namespace tessera
