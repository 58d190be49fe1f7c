#include "runtime/decode_graphs.h"

#include <map>
#include <tuple>

#include "kernels/status_macros.h"
#if defined(TESSERA_WITH_CUDA)
#include "kernels/cuda/cuda_backend.h"
#endif

namespace tessera {

bool DecodeGraphKey::operator<(const DecodeGraphKey& o) const {
  return std::tie(tokens, cache, n_slots, max_seq) < std::tie(o.tokens, o.cache, o.n_slots, o.max_seq);
}

#if defined(TESSERA_WITH_CUDA)

struct DecodeGraphs::Impl {
  CudaBackend* backend;
  std::map<DecodeGraphKey, CudaGraph> graphs;
};

bool DecodeGraphs::Supported(const Backend& backend) { return backend.kind() == BackendKind::kCuda; }

DecodeGraphs::DecodeGraphs(Backend* backend)
    : impl_(new Impl{static_cast<CudaBackend*>(backend), {}}) {}

absl::Status DecodeGraphs::Capture(const DecodeGraphKey& key,
                                   const std::function<absl::Status()>& enqueue) {
  RETURN_IF_ERROR(impl_->backend->BeginCapture());
  const absl::Status enqueued = enqueue();
  absl::StatusOr<CudaGraph> graph = impl_->backend->EndCapture();  // always end the capture
  RETURN_IF_ERROR(enqueued);
  RETURN_IF_ERROR(graph.status());
  impl_->graphs.insert_or_assign(key, std::move(graph).value());
  return absl::OkStatus();
}

absl::Status DecodeGraphs::Replay(const DecodeGraphKey& key) {
  auto it = impl_->graphs.find(key);
  if (it == impl_->graphs.end()) return absl::NotFoundError("no decode graph of this shape");
  return it->second.Replay();
}

#else  // no CUDA: nothing captures

struct DecodeGraphs::Impl {
  std::map<DecodeGraphKey, int> graphs;
};

bool DecodeGraphs::Supported(const Backend&) { return false; }

DecodeGraphs::DecodeGraphs(Backend*) : impl_(new Impl) {}

absl::Status DecodeGraphs::Capture(const DecodeGraphKey&, const std::function<absl::Status()>&) {
  return absl::UnimplementedError("CUDA graphs need a CUDA build and the CUDA backend");
}

absl::Status DecodeGraphs::Replay(const DecodeGraphKey&) {
  return absl::UnimplementedError("CUDA graphs need a CUDA build and the CUDA backend");
}

#endif

DecodeGraphs::~DecodeGraphs() = default;

bool DecodeGraphs::Has(const DecodeGraphKey& key) const { return impl_->graphs.count(key) > 0; }

void DecodeGraphs::Clear() { impl_->graphs.clear(); }

}  // namespace tessera
