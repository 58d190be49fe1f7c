#include "kernels/tensor_view.h"

#include "absl/strings/str_cat.h"

namespace tessera {

std::string TensorView::DebugString() const {
  std::string s = "[";
  for (int i = 0; i < rank; ++i) absl::StrAppend(&s, i ? ", " : "", shape[i]);
  absl::StrAppend(&s, "] ", DTypeName(dtype));
  return s;
}

}  // namespace tessera
