// GuardedDeviceBackend: the CPU backend's math behind a device boundary the host cannot cross,
// so that the runtime's device path (weights uploaded, caches and activations in backend memory,
// results copied back) is exercised and checked on machines without a GPU.
//
// - Allocate() maps fresh pages with no access rights (PROT_NONE). Any host read or write of
//   "device" memory outside an op or a copy faults at once (SIGSEGV), as reading a CUDA pointer
//   from the host would; the test dies instead of passing by accident.
// - Every op checks that each view it is given is tagged Device::kCuda and lies inside one live
//   allocation (InvalidArgument naming the op and view otherwise), then opens all allocations,
//   runs the CPU backend's op and closes them again.
// - CopyToDevice / CopyToHost check that the device side is inside a live allocation.
//
// - With `graphs` at construction it also captures graphs as the CUDA backend does
//   (graph_capture()): between BeginCapture and EndCapture ops and CopyWithinDevice are recorded
//   with their argument views, not run, and Allocate, the host copies and Synchronize are
//   refused; a replay runs the recorded ops again with the same views, each checked against the
//   live allocations, so a graph that kept a pointer to freed memory fails its replay
//   (InvalidArgument "... is not inside device memory") instead of passing. Attention then
//   writes through op scratch from a ScratchArena (kernels/scratch_arena.h) sized by the
//   output, as the CUDA backend's split-KV attention does, so scratch grows with longer
//   prefills and larger batches as it does on a GPU.
//
// kind() is kCpu (nothing CUDA-specific such as NCCL is reached) and device() is kCuda.
// Single-threaded, like every Backend. Test-only: each op costs two mprotect() calls per live
// allocation.
#ifndef TESSERA_TESTS_RUNTIME_GUARDED_DEVICE_BACKEND_H_
#define TESSERA_TESTS_RUNTIME_GUARDED_DEVICE_BACKEND_H_

#include <cstddef>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/backend.h"
#include "kernels/graph_capture.h"
#include "kernels/scratch_arena.h"

namespace tessera::testing {

class GuardedDeviceBackend final : public Backend {
 public:
  explicit GuardedDeviceBackend(bool graphs = false);
  ~GuardedDeviceBackend() override;

  BackendKind kind() const override { return BackendKind::kCpu; }
  absl::string_view name() const override { return "guarded-device"; }
  Device device() const override { return Device::kCuda; }
  absl::Status Synchronize() override { return RefuseWhileCapturing("Synchronize"); }
  GraphCapture* graph_capture() override { return graphs_ ? &capture_ : nullptr; }
  absl::StatusOr<void*> Allocate(size_t bytes) override;
  void Free(void* pointer) override;
  absl::Status CopyToDevice(void* device_dst, const void* host_src, size_t bytes) override;
  absl::Status CopyToHost(void* host_dst, const void* device_src, size_t bytes) override;
  absl::Status CopyWithinDevice(void* device_dst, const void* device_src, size_t bytes) override;

  // Ops run, allocations made and bytes copied so far.
  int64_t ops() const { return ops_; }
  int64_t allocations() const { return allocation_count_; }
  int64_t bytes_to_device() const { return bytes_to_device_; }
  int64_t bytes_to_host() const { return bytes_to_host_; }
  // Graphs captured and replayed, and the op scratch (graphs only).
  int64_t captures() const { return captures_; }
  int64_t replays() const { return replays_; }
  const ScratchArena& scratch() const { return scratch_; }

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
  using Views = std::vector<std::pair<const char*, TensorView>>;
  using Work = std::function<absl::Status()>;
  class Capture;
  class Graph;

  // OK when [p, p + bytes) lies inside one live allocation.
  bool Inside(const void* p, size_t bytes) const;
  absl::Status CheckViews(absl::string_view op, const Views& views) const;
  absl::Status RefuseWhileCapturing(absl::string_view what) const;
  // Opens every allocation for reading and writing (open = true) or closes them all.
  void SetAccess(bool open);
  // Runs `work` now, or records it while capturing.
  absl::Status RunOrRecord(Work work);
  // Checks the views, opens the memory, runs `op` on the CPU backend, closes the memory (at once,
  // or at each replay while capturing).
  template <typename Args>
  absl::Status Forward(absl::string_view name, Views views, const Args& a,
                       absl::Status (Backend::*op)(const Args&));
  absl::Status Copy(void* device_dst, const void* device_src, size_t bytes);

  class Capture final : public GraphCapture {
   public:
    explicit Capture(GuardedDeviceBackend* backend) : backend_(backend) {}
    absl::Status BeginCapture() override;
    absl::StatusOr<std::unique_ptr<CapturedWork>> EndCapture() override;
    uint64_t scratch_generation() const override { return backend_->scratch_.generation(); }

   private:
    GuardedDeviceBackend* backend_;
  };

  std::unique_ptr<Backend> cpu_;
  std::map<const char*, size_t> allocations_;  // start -> mapped bytes
  int64_t ops_ = 0, allocation_count_ = 0, bytes_to_device_ = 0, bytes_to_host_ = 0;
  // Declared after allocations_: the arena releases its buffers through Free() when destroyed.
  bool graphs_ = false;
  bool capturing_ = false;
  std::vector<Work> recording_;
  Capture capture_{this};
  ScratchArena scratch_;
  int64_t captures_ = 0, replays_ = 0;
};

}  // namespace tessera::testing

#endif  // TESSERA_TESTS_RUNTIME_GUARDED_DEVICE_BACKEND_H_
