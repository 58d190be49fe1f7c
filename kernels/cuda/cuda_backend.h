// CudaBackend: every Backend op on one NVIDIA GPU, with cuBLAS GEMMs and hand-written kernels.
//
// Numerics. Activations, KV caches and reductions are F32 as on the CPU backend; weights may be
// F32, F16 or BF16 and every op accumulates in F32 (F64 for RMSNorm's sum of squares and the
// softmax statistics, as the CPU does). The only op that does not compute with the exact stored
// values is a half-precision GEMM with more than kGemvMaxRows (8) rows (prefill): there the F32
// activations are rounded to the weight dtype so that cuBLAS runs BF16 x BF16 (or F16 x F16)
// on tensor cores with F32 accumulation and F32 output, as a BF16 PyTorch model does. That
// costs a relative error of about 2^-9 (BF16) or 2^-12 (F16) per product: measured against the
// CPU's F32 math by the parity suite (tests/kernels/backend_parity_test.cc) and within its
// thresholds of 1e-2 (BF16) and 1e-3 (F16). Decode GEMMs (m <= 8) use a hand-written GEMV that
// widens each weight to F32 exactly, and F32 weights use cublasSgemm (no TF32).
//
// Streams. Every op enqueues on the backend's own non-blocking stream and returns at once;
// Synchronize() waits for it and reports asynchronous errors (and a token whose cache slot or
// position was out of range, which the CPU reports from the op itself). Allocate, Free and the
// copies are synchronous, ordered after the work already enqueued. All views passed to ops must
// be device memory (TensorView::device == Device::kCuda); host views are refused.
//
// Memory. Allocate() is cudaMalloc plus a zero fill. Ops never allocate per call: the cuBLAS
// workspace is allocated once at creation, and the scratch of split-KV attention, of the
// activation cast before a half-precision cuBLAS GEMM (and its per-row scales and F32 output for
// F16 weights) and of large-k top-k grows only when a larger shape arrives
// (kernels/scratch_arena.h: while a CudaGraph is alive, a buffer that grows is kept for it
// instead of freed, and scratch_generation() changes). Failures say how many bytes were asked
// and how many were free.
//
// Device selection. Create(local_rank) takes device local_rank % (visible devices), so
// CUDA_VISIBLE_DEVICES is respected (the runtime numbers the visible devices from 0). Two ranks
// of one host must not share a device: the launcher all-gathers pci_bus_id() and refuses
// duplicates (kernels/ does not depend on parallel/).
//
// CUDA graphs. BeginCapture() / EndCapture() record everything enqueued on the stream in between
// (ops only: no Synchronize, copies or allocations) into a CudaGraph whose Replay() re-enqueues
// it. A graph captures buffer addresses and shapes, and the host-side choices made from shapes
// (GEMV or cuBLAS, the split-KV factor): between replays the caller may change the contents of
// the captured buffers (token ids, positions, slots copied in place with CopyToDevice) but not
// which buffers are used or their shapes. Scratch must already be large enough: run the step
// once eagerly before capturing it. Scratch that grows after a capture does not invalidate the
// graph (the old buffer lives as long as some graph does); graph_capture() offers the same
// capture behind the backend-neutral interface of kernels/graph_capture.h.
//
// Threads: one thread at a time (as every Backend); the calling thread's current device is set
// to this backend's device by every call.
#ifndef TESSERA_KERNELS_CUDA_CUDA_BACKEND_H_
#define TESSERA_KERNELS_CUDA_CUDA_BACKEND_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/backend.h"
#include "kernels/graph_capture.h"
#include "kernels/scratch_arena.h"

// CUDA handle types, so that this header needs no CUDA include (cudaStream_t is CUstream_st*).
struct CUstream_st;
struct CUgraphExec_st;
struct cublasContext;

namespace tessera {

class CudaBackend;

// An instantiated CUDA graph of work captured on a CudaBackend's stream. Movable; the backend
// must outlive it.
class CudaGraph {
 public:
  CudaGraph(CudaGraph&& other) noexcept;
  CudaGraph& operator=(CudaGraph&& other) noexcept;
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;
  ~CudaGraph();

  // Enqueues the captured work on the backend's stream (asynchronous, like an op).
  absl::Status Replay();

 private:
  friend class CudaBackend;
  // Registers the graph with the backend's scratch arena (see the header comment).
  CudaGraph(CudaBackend* backend, CUgraphExec_st* exec);
  void Destroy();
  CudaBackend* backend_ = nullptr;
  CUgraphExec_st* exec_ = nullptr;
};

class CudaBackend final : public Backend {
 public:
  // Uses device local_rank % (number of visible devices). Unavailable, with the driver's reason,
  // when there is no usable device; InvalidArgument when local_rank < 0.
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(int local_rank = 0);
  ~CudaBackend() override;

  BackendKind kind() const override { return BackendKind::kCuda; }
  absl::string_view name() const override { return "cuda"; }
  Device device() const override { return Device::kCuda; }
  absl::Status Synchronize() override;
  absl::StatusOr<void*> Allocate(size_t bytes) override;
  void Free(void* pointer) override;
  absl::Status CopyToDevice(void* device_dst, const void* host_src, size_t bytes) override;
  absl::Status CopyToHost(void* host_dst, const void* device_src, size_t bytes) override;
  absl::Status CopyWithinDevice(void* device_dst, const void* device_src, size_t bytes) override;

  // The device: its index among the visible devices, their count, its PCI bus id
  // ("0000:3b:00.0", unique per physical GPU of a host), name, multiprocessors and memory.
  int device_index() const { return device_; }
  int visible_devices() const { return visible_devices_; }
  const std::string& pci_bus_id() const { return pci_bus_id_; }
  const std::string& device_name() const { return device_name_; }
  int multiprocessors() const { return multiprocessors_; }
  size_t total_memory() const { return total_memory_; }
  // "NVIDIA H200, device 0 of 1 visible, PCI 0000:3b:00.0, 139.8 GiB (CUDA_VISIBLE_DEVICES=0)".
  std::string Description() const;

  // The stream every op is enqueued on (a cudaStream_t), for interop.
  CUstream_st* stream() const { return stream_; }

  // Graph capture of the ops enqueued between the two calls (see the header comment). After
  // BeginCapture() succeeded, always call EndCapture(), also when an op in between failed: it
  // ends the capture and then reports the failure.
  absl::Status BeginCapture();
  absl::StatusOr<CudaGraph> EndCapture();
  bool capturing() const { return capturing_; }
  GraphCapture* graph_capture() override { return &graph_capture_; }
  // Changes whenever a scratch buffer moves (kernels/scratch_arena.h).
  uint64_t scratch_generation() const { return scratch_->generation(); }
  // Bytes of scratch kept alive only for live graphs.
  size_t retired_scratch_bytes() const { return scratch_->retired_bytes(); }

  // Blocks along the keys ("splits") the attention op uses for `n` query tokens over a cache of
  // `max_seq` positions: 1 is the plain tiled kernel, more is split-KV with a merge. Depends on
  // shapes and the device only.
  int AttentionSplits(int64_t n, int64_t heads, int64_t kv_heads, int64_t max_seq) const;

 protected:
  absl::Status DoEmbedding(const EmbeddingArgs& a) override;
  absl::Status DoRmsNorm(const RmsNormArgs& a) override;
  absl::Status DoGemm(const GemmArgs& a) override;
  absl::Status DoRope(const RopeArgs& a) override;
  absl::Status DoKvWrite(const KvWriteArgs& a) override;
  absl::Status DoAttention(const AttentionArgs& a) override;
  absl::Status DoGatherRows(const GatherRowsArgs& a) override;
  absl::Status DoMergeAttention(const MergeAttentionArgs& a) override;
  absl::Status DoSiluMul(const SiluMulArgs& a) override;
  absl::Status DoAdd(const AddArgs& a) override;
  absl::Status DoLerp(const LerpArgs& a) override;
  absl::Status DoAverage(const AverageArgs& a) override;
  absl::Status DoKeyScores(const KeyScoresArgs& a) override;
  absl::Status DoPhiloxDropout(const PhiloxDropoutArgs& a) override;
  absl::Status DoCast(const CastArgs& a) override;
  absl::Status DoArgMax(const ArgMaxArgs& a) override;
  absl::Status DoTopK(const TopKArgs& a) override;
  absl::Status DoSoftmaxStats(const SoftmaxStatsArgs& a) override;

 private:
  friend class CudaGraph;
  // GraphCapture over BeginCapture / EndCapture.
  class Capture final : public GraphCapture {
   public:
    explicit Capture(CudaBackend* backend) : backend_(backend) {}
    absl::Status BeginCapture() override { return backend_->BeginCapture(); }
    absl::StatusOr<std::unique_ptr<CapturedWork>> EndCapture() override;
    uint64_t scratch_generation() const override { return backend_->scratch_generation(); }

   private:
    CudaBackend* backend_;
  };
  enum class Scratch : int { kGemmInput = 0, kAttention = 1, kTopK = 2, kGemmOutput = 3 };
  static constexpr int kScratchKinds = 4;
  static constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;

  CudaBackend() = default;
  // Makes this backend's device current on the calling thread.
  absl::Status Activate() const;
  // Scratch of at least `bytes` for `op`, grown (never shrunk) outside graph capture.
  absl::StatusOr<void*> ScratchBuffer(Scratch which, size_t bytes, absl::string_view op);
  // ResourceExhausted naming the request, the free and total device memory.
  absl::Status OutOfMemory(size_t bytes, absl::string_view what) const;
  // cudaMalloc, with OutOfMemory on failure.
  absl::StatusOr<void*> DeviceMalloc(size_t bytes, absl::string_view what);
  absl::Status RefuseWhileCapturing(absl::string_view what) const;
  // DoAttention for a sparse variant or one with counter outputs.
  absl::Status SparseAttention(const AttentionArgs& a);

  int device_ = 0;
  int visible_devices_ = 0;
  std::string pci_bus_id_;
  std::string device_name_;
  int multiprocessors_ = 0;
  size_t total_memory_ = 0;
  CUstream_st* stream_ = nullptr;
  cublasContext* cublas_ = nullptr;
  void* cublas_workspace_ = nullptr;
  // Pinned, device-mapped words set by kernels on out-of-range tokens (launchers.h ErrorFlag).
  int* error_flags_host_ = nullptr;
  int* error_flags_device_ = nullptr;
  std::unique_ptr<ScratchArena> scratch_;
  Capture graph_capture_{this};
  bool capturing_ = false;
};

}  // namespace tessera

#endif  // TESSERA_KERNELS_CUDA_CUDA_BACKEND_H_
