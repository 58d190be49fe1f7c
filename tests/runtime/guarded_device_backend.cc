#include "tests/runtime/guarded_device_backend.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace tessera::testing {
namespace {

size_t PageRounded(size_t bytes) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return (bytes == 0 ? page : (bytes + page - 1) / page * page);
}

}  // namespace

// A recorded sequence of ops; registered with the scratch arena while it lives.
class GuardedDeviceBackend::Graph final : public CapturedWork {
 public:
  Graph(GuardedDeviceBackend* backend, std::vector<Work> work)
      : backend_(backend), work_(std::move(work)) {
    backend_->scratch_.CaptureCreated();
  }
  ~Graph() override { backend_->scratch_.CaptureDestroyed(); }
  absl::Status Replay() override {
    RETURN_IF_ERROR(backend_->RefuseWhileCapturing("Replay"));
    ++backend_->replays_;
    for (const Work& w : work_) RETURN_IF_ERROR(w());
    return absl::OkStatus();
  }

 private:
  GuardedDeviceBackend* backend_;
  std::vector<Work> work_;
};

absl::Status GuardedDeviceBackend::Capture::BeginCapture() {
  RETURN_IF_ERROR(backend_->RefuseWhileCapturing("BeginCapture"));
  backend_->capturing_ = true;
  backend_->recording_.clear();
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CapturedWork>> GuardedDeviceBackend::Capture::EndCapture() {
  if (!backend_->capturing_) return absl::FailedPreconditionError("EndCapture without BeginCapture");
  backend_->capturing_ = false;
  ++backend_->captures_;
  return std::make_unique<Graph>(backend_, std::move(backend_->recording_));
}

GuardedDeviceBackend::GuardedDeviceBackend(bool graphs)
    : graphs_(graphs),
      scratch_(
          1, [this](size_t bytes, absl::string_view) { return Allocate(bytes); },
          [this](void* p) { Free(p); }) {
  auto cpu = MakeBackend(BackendKind::kCpu);
  if (!cpu.ok()) std::abort();  // the CPU backend always exists
  cpu_ = *std::move(cpu);
}

GuardedDeviceBackend::~GuardedDeviceBackend() {
  for (const auto& [start, bytes] : allocations_) munmap(const_cast<char*>(start), bytes);
  allocations_.clear();  // the arena's own release (after this body) then finds nothing
}

absl::Status GuardedDeviceBackend::RefuseWhileCapturing(absl::string_view what) const {
  if (!capturing_) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("guarded device: ", what, " is not allowed during graph capture"));
}

absl::Status GuardedDeviceBackend::RunOrRecord(Work work) {
  if (capturing_) {
    recording_.push_back(std::move(work));
    return absl::OkStatus();
  }
  return work();
}

absl::StatusOr<void*> GuardedDeviceBackend::Allocate(size_t bytes) {
  RETURN_IF_ERROR(RefuseWhileCapturing("Allocate"));
  const size_t mapped = PageRounded(bytes);
  void* p = mmap(nullptr, mapped, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        absl::StrCat("guarded device: cannot map ", bytes, " bytes: ", std::strerror(errno)));
  }
  allocations_[static_cast<const char*>(p)] = mapped;
  ++allocation_count_;
  return p;
}

void GuardedDeviceBackend::Free(void* pointer) {
  auto it = allocations_.find(static_cast<const char*>(pointer));
  if (it == allocations_.end()) return;
  munmap(pointer, it->second);
  allocations_.erase(it);
}

bool GuardedDeviceBackend::Inside(const void* p, size_t bytes) const {
  const char* c = static_cast<const char*>(p);
  auto it = allocations_.upper_bound(c);
  if (it == allocations_.begin()) return false;
  --it;
  return c >= it->first && c + bytes <= it->first + it->second;
}

void GuardedDeviceBackend::SetAccess(bool open) {
  for (const auto& [start, bytes] : allocations_) {
    if (mprotect(const_cast<char*>(start), bytes, open ? PROT_READ | PROT_WRITE : PROT_NONE) !=
        0) {
      std::abort();
    }
  }
}

absl::Status GuardedDeviceBackend::CopyToDevice(void* device_dst, const void* host_src,
                                                size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  RETURN_IF_ERROR(RefuseWhileCapturing("CopyToDevice"));
  if (!Inside(device_dst, bytes)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "guarded device: CopyToDevice of ", bytes, " bytes to a destination that is not device "
        "memory"));
  }
  if (Inside(host_src, 1)) {
    return absl::InvalidArgumentError("guarded device: CopyToDevice from device memory");
  }
  SetAccess(true);
  std::memcpy(device_dst, host_src, bytes);
  SetAccess(false);
  bytes_to_device_ += static_cast<int64_t>(bytes);
  return absl::OkStatus();
}

absl::Status GuardedDeviceBackend::CopyWithinDevice(void* device_dst, const void* device_src,
                                                    size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  return RunOrRecord([=, this] { return Copy(device_dst, device_src, bytes); });
}

absl::Status GuardedDeviceBackend::Copy(void* device_dst, const void* device_src, size_t bytes) {
  if (!Inside(device_src, bytes) || !Inside(device_dst, bytes)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "guarded device: CopyWithinDevice of ", bytes, " bytes with a side outside device memory"));
  }
  SetAccess(true);
  std::memcpy(device_dst, device_src, bytes);
  SetAccess(false);
  return absl::OkStatus();
}

absl::Status GuardedDeviceBackend::CopyToHost(void* host_dst, const void* device_src,
                                              size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  RETURN_IF_ERROR(RefuseWhileCapturing("CopyToHost"));
  if (!Inside(device_src, bytes)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "guarded device: CopyToHost of ", bytes, " bytes from a source that is not device memory"));
  }
  if (Inside(host_dst, 1)) {
    return absl::InvalidArgumentError("guarded device: CopyToHost into device memory");
  }
  SetAccess(true);
  std::memcpy(host_dst, device_src, bytes);
  SetAccess(false);
  bytes_to_host_ += static_cast<int64_t>(bytes);
  return absl::OkStatus();
}

absl::Status GuardedDeviceBackend::CheckViews(absl::string_view op, const Views& views) const {
  for (const auto& [name, view] : views) {
    if (view.empty()) continue;
    if (view.device != Device::kCuda) {
      return absl::InvalidArgumentError(absl::StrCat("guarded device: ", op, ": ", name, " ",
                                                     view.DebugString(), " is tagged host"));
    }
    if (!Inside(view.data, view.bytes())) {
      return absl::InvalidArgumentError(absl::StrCat("guarded device: ", op, ": ", name, " ",
                                                     view.DebugString(),
                                                     " is not inside device memory"));
    }
  }
  return absl::OkStatus();
}

template <typename Args>
absl::Status GuardedDeviceBackend::Forward(absl::string_view name, Views views, const Args& a,
                                           absl::Status (Backend::*op)(const Args&)) {
  return RunOrRecord([this, name = std::string(name), views = std::move(views), a, op] {
    RETURN_IF_ERROR(CheckViews(name, views));
    SetAccess(true);
    const absl::Status s = (cpu_.get()->*op)(a);
    SetAccess(false);
    ++ops_;
    return s;
  });
}

absl::Status GuardedDeviceBackend::DoEmbedding(const EmbeddingArgs& a) {
  return Forward("Embedding", {{"ids", a.ids}, {"table", a.table}, {"out", a.out}}, a,
                 &Backend::Embedding);
}
absl::Status GuardedDeviceBackend::DoRmsNorm(const RmsNormArgs& a) {
  return Forward("RmsNorm", {{"in", a.in}, {"weight", a.weight}, {"out", a.out}}, a,
                 &Backend::RmsNorm);
}
absl::Status GuardedDeviceBackend::DoGemm(const GemmArgs& a) {
  return Forward("Gemm", {{"x", a.x}, {"w", a.w}, {"y", a.y}}, a, &Backend::Gemm);
}
absl::Status GuardedDeviceBackend::DoRope(const RopeArgs& a) {
  return Forward("Rope", {{"x", a.x}, {"positions", a.positions}, {"inv_freq", a.inv_freq}}, a,
                 &Backend::Rope);
}
absl::Status GuardedDeviceBackend::DoKvWrite(const KvWriteArgs& a) {
  return Forward("KvWrite",
                 {{"k", a.k},
                  {"v", a.v},
                  {"k_cache", a.k_cache},
                  {"v_cache", a.v_cache},
                  {"slots", a.slots},
                  {"entries", a.entries}},
                 a, &Backend::KvWrite);
}
absl::Status GuardedDeviceBackend::DoGatherRows(const GatherRowsArgs& a) {
  return Forward("GatherRows", {{"in", a.in}, {"indices", a.indices}, {"out", a.out}}, a,
                 &Backend::GatherRows);
}
absl::Status GuardedDeviceBackend::DoAttention(const AttentionArgs& a) {
  AttentionArgs through = a;
  if (graphs_) {  // through op scratch, then copied to `out`
    ASSIGN_OR_RETURN(void* scratch, scratch_.Get(0, a.out.bytes(), "Attention", capturing_));
    through.out.data = scratch;
  }
  RETURN_IF_ERROR(Forward("Attention",
                          {{"q", a.q},
                           {"k_cache", a.k_cache},
                           {"v_cache", a.v_cache},
                           {"slots", a.slots},
                           {"entries", a.entries},
                           {"out (scratch with graphs)", through.out},
                           {"lse", a.lse}},
                          through, &Backend::Attention));
  if (!graphs_) return absl::OkStatus();
  return CopyWithinDevice(a.out.data, through.out.data, a.out.bytes());
}
absl::Status GuardedDeviceBackend::DoMergeAttention(const MergeAttentionArgs& a) {
  return Forward("MergeAttention",
                 {{"out_a", a.out_a},
                  {"lse_a", a.lse_a},
                  {"out_b", a.out_b},
                  {"lse_b", a.lse_b},
                  {"out", a.out},
                  {"lse_out", a.lse_out}},
                 a, &Backend::MergeAttention);
}
absl::Status GuardedDeviceBackend::DoSiluMul(const SiluMulArgs& a) {
  return Forward("SiluMul", {{"gate", a.gate}, {"up", a.up}, {"out", a.out}}, a,
                 &Backend::SiluMul);
}
absl::Status GuardedDeviceBackend::DoAdd(const AddArgs& a) {
  return Forward("Add", {{"a", a.a}, {"b", a.b}, {"out", a.out}}, a, &Backend::Add);
}
absl::Status GuardedDeviceBackend::DoLerp(const LerpArgs& a) {
  return Forward("Lerp", {{"a", a.a}, {"b", a.b}, {"out", a.out}}, a, &Backend::Lerp);
}
absl::Status GuardedDeviceBackend::DoAverage(const AverageArgs& a) {
  return Forward("Average", {{"a", a.a}, {"b", a.b}, {"out", a.out}}, a, &Backend::Average);
}
absl::Status GuardedDeviceBackend::DoKeyScores(const KeyScoresArgs& a) {
  return Forward("KeyScores", {{"q", a.q}, {"k_cache", a.k_cache}, {"out", a.out}}, a,
                 &Backend::KeyScores);
}
absl::Status GuardedDeviceBackend::DoPhiloxDropout(const PhiloxDropoutArgs& a) {
  return Forward("PhiloxDropout", {{"x", a.x}, {"row_words", a.row_words}}, a,
                 &Backend::PhiloxDropout);
}
absl::Status GuardedDeviceBackend::DoCast(const CastArgs& a) {
  return Forward("Cast", {{"in", a.in}, {"out", a.out}}, a, &Backend::Cast);
}
absl::Status GuardedDeviceBackend::DoArgMax(const ArgMaxArgs& a) {
  return Forward("ArgMax", {{"logits", a.logits}, {"values", a.values}, {"indices", a.indices}},
                 a, &Backend::ArgMax);
}
absl::Status GuardedDeviceBackend::DoTopK(const TopKArgs& a) {
  return Forward("TopK", {{"logits", a.logits}, {"values", a.values}, {"indices", a.indices}}, a,
                 &Backend::TopK);
}
absl::Status GuardedDeviceBackend::DoSoftmaxStats(const SoftmaxStatsArgs& a) {
  return Forward("SoftmaxStats",
                 {{"logits", a.logits},
                  {"max", a.max},
                  {"sum_exp", a.sum_exp},
                  {"sum_exp_shifted", a.sum_exp_shifted}},
                 a, &Backend::SoftmaxStats);
}

}  // namespace tessera::testing
