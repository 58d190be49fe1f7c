#include "parallel/communicator.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace tessera {

absl::Status SendString(Communicator& comm, const std::string& data, int peer, int tag) {
  int32_t length = static_cast<int32_t>(data.size());
  RETURN_IF_ERROR(comm.Send(TensorView::Of(&length, DType::kI32, {1}), peer, tag));
  if (length == 0) return absl::OkStatus();
  return comm.Send(TensorView::Of(data.data(), DType::kU8, {length}), peer, tag);
}

absl::StatusOr<std::string> RecvString(Communicator& comm, int peer, int tag) {
  int32_t length = 0;
  RETURN_IF_ERROR(comm.Recv(TensorView::Of(&length, DType::kI32, {1}), peer, tag));
  if (length < 0) {
    return absl::DataLossError(absl::StrCat("RecvString from rank ", peer, ": bad length ", length));
  }
  std::string data(static_cast<size_t>(length), '\0');
  if (length > 0) RETURN_IF_ERROR(comm.Recv(TensorView::Of(data.data(), DType::kU8, {length}), peer, tag));
  return data;
}

}  // namespace tessera
