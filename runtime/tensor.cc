#include "runtime/tensor.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "kernels/status_macros.h"

namespace tessera {

void internal::TensorRelease::operator()(void* p) const {
  if (backend != nullptr) {
    backend->Free(p);
  } else {
    std::free(p);
  }
}

Tensor::Tensor(DType dtype, std::initializer_list<int64_t> dims)
    : Tensor(dtype, std::vector<int64_t>(dims)) {}

Tensor::Tensor(DType dtype, const std::vector<int64_t>& dims) {
  view_.dtype = dtype;
  if (!Resize(dims).ok()) throw std::bad_alloc();
}

Tensor::Tensor(Backend* backend, DType dtype) : buffer_(nullptr, internal::TensorRelease{backend}) {
  view_.dtype = dtype;
  view_.device = backend->device();
}

absl::Status Tensor::Resize(const std::vector<int64_t>& dims) {
  view_.rank = 0;
  for (int64_t d : dims) view_.shape[view_.rank++] = d;
  const size_t bytes = view_.bytes();
  if (bytes > capacity_) {
    const size_t rounded = (bytes + 63) / 64 * 64;
    Backend* backend = buffer_.get_deleter().backend;
    void* p = nullptr;
    if (backend != nullptr) {
      buffer_.reset();  // free first: the device may not hold both
      capacity_ = 0;
      ASSIGN_OR_RETURN(p, backend->Allocate(rounded));
    } else {
      p = std::aligned_alloc(64, rounded);
      if (p == nullptr) throw std::bad_alloc();
      std::memset(p, 0, rounded);
    }
    buffer_.reset(p);
    capacity_ = rounded;
  }
  view_.data = buffer_.get();
  return absl::OkStatus();
}

}  // namespace tessera
