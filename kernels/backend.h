// Backend: the closed set of compute ops a Llama forward pass needs.
//
// The public methods validate their arguments (kernels/op_validation.h) and then dispatch to the
// backend's implementation, so every backend sees only well-formed arguments. The CPU backend is
// the numerical specification; the CUDA backend implements the same ops and is compared against
// it by the parity suite. Adding an op means: an Args struct in op_args.h, a Validate overload, a
// pure virtual Do* method here, a CPU implementation, and a parity-test row.
//
// Ops are synchronous on the CPU. A device backend may enqueue work on its stream; results are
// visible on the host after Synchronize(). A Backend is used by one thread at a time.
#ifndef TESSERA_KERNELS_BACKEND_H_
#define TESSERA_KERNELS_BACKEND_H_

#include <memory>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/graph_capture.h"
#include "kernels/op_args.h"
#include "kernels/op_validation.h"
#include "kernels/status_macros.h"

namespace tessera {

enum class BackendKind : uint8_t { kCpu, kCuda };

class Backend {
 public:
  virtual ~Backend() = default;

  virtual BackendKind kind() const = 0;
  virtual absl::string_view name() const = 0;
  // Where Allocate()d memory lives; TensorViews passed to ops must be there.
  virtual Device device() const = 0;
  // Waits for all enqueued ops; reports the first asynchronous error.
  virtual absl::Status Synchronize() = 0;

  // Memory on the backend's device, zero-filled; ResourceExhausted (saying how much was asked
  // and how much is free) when it cannot be had. Free(nullptr) is a no-op.
  virtual absl::StatusOr<void*> Allocate(size_t bytes) = 0;
  virtual void Free(void* pointer) = 0;
  // Synchronous copies between host memory and the device (plain memcpy on the CPU).
  virtual absl::Status CopyToDevice(void* device_dst, const void* host_src, size_t bytes) = 0;
  virtual absl::Status CopyToHost(void* host_dst, const void* device_src, size_t bytes) = 0;
  // A copy between two device buffers, ordered with the ops (enqueued on a device backend;
  // the buffers must not overlap).
  virtual absl::Status CopyWithinDevice(void* device_dst, const void* device_src,
                                        size_t bytes) = 0;
  // Graph capture of enqueued ops (kernels/graph_capture.h), owned by the backend; null where
  // the backend cannot capture (the CPU backend).
  virtual GraphCapture* graph_capture() { return nullptr; }

  absl::Status Embedding(const EmbeddingArgs& a) { return Run(a, &Backend::DoEmbedding); }
  absl::Status RmsNorm(const RmsNormArgs& a) { return Run(a, &Backend::DoRmsNorm); }
  absl::Status Gemm(const GemmArgs& a) { return Run(a, &Backend::DoGemm); }
  absl::Status Rope(const RopeArgs& a) { return Run(a, &Backend::DoRope); }
  absl::Status KvWrite(const KvWriteArgs& a) { return Run(a, &Backend::DoKvWrite); }
  absl::Status Attention(const AttentionArgs& a) { return Run(a, &Backend::DoAttention); }
  absl::Status GatherRows(const GatherRowsArgs& a) { return Run(a, &Backend::DoGatherRows); }
  absl::Status MergeAttention(const MergeAttentionArgs& a) {
    return Run(a, &Backend::DoMergeAttention);
  }
  absl::Status SiluMul(const SiluMulArgs& a) { return Run(a, &Backend::DoSiluMul); }
  absl::Status Add(const AddArgs& a) { return Run(a, &Backend::DoAdd); }
  absl::Status Lerp(const LerpArgs& a) { return Run(a, &Backend::DoLerp); }
  absl::Status Average(const AverageArgs& a) { return Run(a, &Backend::DoAverage); }
  absl::Status KeyScores(const KeyScoresArgs& a) { return Run(a, &Backend::DoKeyScores); }
  absl::Status PhiloxDropout(const PhiloxDropoutArgs& a) {
    return Run(a, &Backend::DoPhiloxDropout);
  }
  absl::Status Cast(const CastArgs& a) { return Run(a, &Backend::DoCast); }
  absl::Status ArgMax(const ArgMaxArgs& a) { return Run(a, &Backend::DoArgMax); }
  absl::Status TopK(const TopKArgs& a) { return Run(a, &Backend::DoTopK); }
  absl::Status SoftmaxStats(const SoftmaxStatsArgs& a) { return Run(a, &Backend::DoSoftmaxStats); }

 protected:
  virtual absl::Status DoEmbedding(const EmbeddingArgs& a) = 0;
  virtual absl::Status DoRmsNorm(const RmsNormArgs& a) = 0;
  virtual absl::Status DoGemm(const GemmArgs& a) = 0;
  virtual absl::Status DoRope(const RopeArgs& a) = 0;
  virtual absl::Status DoKvWrite(const KvWriteArgs& a) = 0;
  virtual absl::Status DoAttention(const AttentionArgs& a) = 0;
  virtual absl::Status DoGatherRows(const GatherRowsArgs& a) = 0;
  virtual absl::Status DoMergeAttention(const MergeAttentionArgs& a) = 0;
  virtual absl::Status DoSiluMul(const SiluMulArgs& a) = 0;
  virtual absl::Status DoAdd(const AddArgs& a) = 0;
  virtual absl::Status DoLerp(const LerpArgs& a) = 0;
  virtual absl::Status DoAverage(const AverageArgs& a) = 0;
  virtual absl::Status DoKeyScores(const KeyScoresArgs& a) = 0;
  virtual absl::Status DoPhiloxDropout(const PhiloxDropoutArgs& a) = 0;
  virtual absl::Status DoCast(const CastArgs& a) = 0;
  virtual absl::Status DoArgMax(const ArgMaxArgs& a) = 0;
  virtual absl::Status DoTopK(const TopKArgs& a) = 0;
  virtual absl::Status DoSoftmaxStats(const SoftmaxStatsArgs& a) = 0;

 private:
  template <typename Args>
  absl::Status Run(const Args& a, absl::Status (Backend::*impl)(const Args&)) {
    RETURN_IF_ERROR(Validate(a));
    return (this->*impl)(a);
  }
};

// Creates a backend. kCuda in a build without CUDA returns Unimplemented; with CUDA it uses
// device local_rank % (visible devices) and returns Unavailable when there is no device.
absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(BackendKind kind, int local_rank = 0);

}  // namespace tessera

#endif  // TESSERA_KERNELS_BACKEND_H_
