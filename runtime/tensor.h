// Tensor: an owning, 64-byte aligned host buffer with a shape and dtype.
//
// The runtime's activations, caches and scratch live in Tensors; ops see them through view().
// A Tensor is movable, not copyable. Its memory is zero-initialised.
//
//   Tensor x(DType::kF32, {n_tokens, dim});
//   backend.RmsNorm({x.view(), weight, x.view(), eps});
#ifndef TESSERA_RUNTIME_TENSOR_H_
#define TESSERA_RUNTIME_TENSOR_H_

#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <memory>
#include <vector>

#include "kernels/tensor_view.h"

namespace tessera {

class Tensor {
 public:
  Tensor() = default;
  Tensor(DType dtype, std::initializer_list<int64_t> dims);
  Tensor(DType dtype, const std::vector<int64_t>& dims);

  const TensorView& view() const { return view_; }
  template <typename T>
  T* data() const {
    return view_.as<T>();
  }
  int64_t numel() const { return view_.numel(); }
  int64_t dim(int i) const { return view_.dim(i); }

  // Reshapes to `dims`, reallocating only when the buffer is too small (contents then undefined).
  void Resize(const std::vector<int64_t>& dims);

 private:
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<void, Free> buffer_;
  size_t capacity_ = 0;
  TensorView view_;
};

}  // namespace tessera

#endif  // TESSERA_RUNTIME_TENSOR_H_
