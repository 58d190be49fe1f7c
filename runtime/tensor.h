// Tensor: an owning, 64-byte aligned buffer with a shape and dtype, in host memory or in a
// backend's device memory.
//
// The runtime's activations, caches and scratch live in Tensors; ops see them through view().
// A host Tensor's data<T>() may be read and written by the host; a device Tensor's may not (copy
// with Backend::CopyToHost / CopyToDevice). A Tensor is movable, not copyable; new memory is
// zero-filled. The backend of a device Tensor must outlive it.
//
//   Tensor x(backend, DType::kF32, {n_tokens, dim});
//   backend->RmsNorm({x.view(), weight, x.view(), eps});
#ifndef TESSERA_RUNTIME_TENSOR_H_
#define TESSERA_RUNTIME_TENSOR_H_

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "kernels/backend.h"
#include "kernels/tensor_view.h"

namespace tessera {

namespace internal {
// Frees a Tensor's buffer with the backend that allocated it (std::free for host tensors).
struct TensorRelease {
  Backend* backend = nullptr;
  void operator()(void* p) const;
};
}  // namespace internal

class Tensor {
 public:
  Tensor() = default;
  // Host memory.
  Tensor(DType dtype, std::initializer_list<int64_t> dims);
  Tensor(DType dtype, const std::vector<int64_t>& dims);
  // Memory of `backend` (host memory for the CPU backend); empty until Resize().
  Tensor(Backend* backend, DType dtype);

  const TensorView& view() const { return view_; }
  template <typename T>
  T* data() const {
    return view_.as<T>();
  }
  int64_t numel() const { return view_.numel(); }
  int64_t dim(int i) const { return view_.dim(i); }

  // Reshapes to `dims`, reallocating only when the buffer is too small (contents then zero).
  // Host tensors abort on allocation failure; device tensors report it.
  absl::Status Resize(const std::vector<int64_t>& dims);

 private:
  std::unique_ptr<void, internal::TensorRelease> buffer_;
  size_t capacity_ = 0;
  TensorView view_;
};

}  // namespace tessera

#endif  // TESSERA_RUNTIME_TENSOR_H_
