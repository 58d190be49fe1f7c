#include "runtime/tensor.h"

#include <cstring>
#include <new>

namespace tessera {

Tensor::Tensor(DType dtype, std::initializer_list<int64_t> dims)
    : Tensor(dtype, std::vector<int64_t>(dims)) {}

Tensor::Tensor(DType dtype, const std::vector<int64_t>& dims) {
  view_.dtype = dtype;
  Resize(dims);
}

void Tensor::Resize(const std::vector<int64_t>& dims) {
  view_.rank = 0;
  for (int64_t d : dims) view_.shape[view_.rank++] = d;
  const size_t bytes = view_.bytes();
  if (bytes > capacity_) {
    const size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    if (p == nullptr) throw std::bad_alloc();
    std::memset(p, 0, rounded);
    buffer_.reset(p);
    capacity_ = rounded;
  }
  view_.data = buffer_.get();
}

}  // namespace tessera
