// TensorView: a non-owning, typed, row-major view of a contiguous buffer.
//
// Every Backend op takes TensorViews. A view never owns its memory: the caller keeps the buffer
// alive for the duration of the op (the runtime's Tensor owns host buffers; weights are views into
// memory-mapped checkpoint files, which are read-only and must never be written through).
//
//   TensorView x = TensorView::Of(buffer.data(), DType::kF32, {n_tokens, dim});
//   x.dim(0) == n_tokens; x.numel() == n_tokens * dim; x.row_bytes() == dim * 4
#ifndef TESSERA_KERNELS_TENSOR_VIEW_H_
#define TESSERA_KERNELS_TENSOR_VIEW_H_

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "kernels/dtype.h"

namespace tessera {

enum class Device : uint8_t { kCpu, kCuda };

struct TensorView {
  static constexpr int kMaxRank = 4;

  void* data = nullptr;
  DType dtype = DType::kF32;
  Device device = Device::kCpu;
  int rank = 0;
  std::array<int64_t, kMaxRank> shape{};

  static TensorView Of(const void* data, DType dtype, std::initializer_list<int64_t> dims,
                       Device device = Device::kCpu) {
    TensorView v;
    v.data = const_cast<void*>(data);
    v.dtype = dtype;
    v.device = device;
    for (int64_t d : dims) v.shape[v.rank++] = d;
    return v;
  }

  bool empty() const { return data == nullptr; }
  int64_t dim(int i) const { return shape[i]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < rank; ++i) n *= shape[i];
    return n;
  }
  size_t bytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype); }
  // Elements in one slice along dim 0 (the product of the trailing dims; also when dim 0 is 0).
  int64_t row_size() const {
    int64_t n = 1;
    for (int i = 1; i < rank; ++i) n *= shape[i];
    return n;
  }
  size_t row_bytes() const { return static_cast<size_t>(row_size()) * DTypeSize(dtype); }

  template <typename T>
  T* as() const {
    return static_cast<T*>(data);
  }

  // Rows [begin, end) along dim 0, sharing the buffer.
  TensorView Rows(int64_t begin, int64_t end) const {
    TensorView v = *this;
    v.data = static_cast<char*>(data) + begin * row_bytes();
    v.shape[0] = end - begin;
    return v;
  }

  // The same buffer seen with another shape of the same element count.
  TensorView Reshaped(std::initializer_list<int64_t> dims) const {
    TensorView v = *this;
    v.rank = 0;
    for (int64_t d : dims) v.shape[v.rank++] = d;
    return v;
  }

  // "[4, 64] BF16", for messages.
  std::string DebugString() const;
};

}  // namespace tessera

#endif  // TESSERA_KERNELS_TENSOR_VIEW_H_
