// Row gather: out[i] = in[indices[i]], bytes copied as they are (any dtype).
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"

namespace tessera {

absl::Status CpuBackend::DoGatherRows(const GatherRowsArgs& a) {
  const int64_t rows = a.in.dim(0), m = a.indices.dim(0);
  const size_t row = a.in.row_bytes();
  const int32_t* indices = a.indices.as<const int32_t>();
  for (int64_t i = 0; i < m; ++i) {
    if (indices[i] < 0 || indices[i] >= rows) {
      return absl::OutOfRangeError(absl::StrCat("GatherRows: index ", i, " is ", indices[i],
                                                ", outside the ", rows, " input rows"));
    }
    std::memcpy(a.out.as<char>() + i * row, a.in.as<const char>() + indices[i] * row, row);
  }
  return absl::OkStatus();
}

}  // namespace tessera
