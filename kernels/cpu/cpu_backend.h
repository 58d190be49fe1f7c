// CpuBackend: the reference implementation of every Backend op.
//
// Plain loops with F32 accumulation, vectorised where it pays (GEMV over BF16/F16 weights),
// OpenBLAS sgemm for F32 and batched GEMM, OpenMP across rows. Each op lives in its own file in
// kernels/cpu/ and is declared in kernels/cpu/cpu_ops.h.
#ifndef TESSERA_KERNELS_CPU_CPU_BACKEND_H_
#define TESSERA_KERNELS_CPU_CPU_BACKEND_H_

#include "absl/strings/string_view.h"
#include "kernels/backend.h"

namespace tessera {

class CpuBackend final : public Backend {
 public:
  // Makes OpenBLAS single-threaded: the CPU ops parallelise with OpenMP themselves.
  CpuBackend();

  // Threads the CPU ops of this process use (OpenMP's team size); n >= 1.
  static void SetThreads(int n);
  static int threads();
  BackendKind kind() const override { return BackendKind::kCpu; }
  absl::string_view name() const override { return "cpu"; }
  Device device() const override { return Device::kCpu; }
  absl::Status Synchronize() override { return absl::OkStatus(); }
  absl::StatusOr<void*> Allocate(size_t bytes) override;
  void Free(void* pointer) override;
  absl::Status CopyToDevice(void* device_dst, const void* host_src, size_t bytes) override;
  absl::Status CopyToHost(void* host_dst, const void* device_src, size_t bytes) override;
  absl::Status CopyWithinDevice(void* device_dst, const void* device_src, size_t bytes) override;

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
};

}  // namespace tessera

#endif  // TESSERA_KERNELS_CPU_CPU_BACKEND_H_
