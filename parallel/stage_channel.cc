#include "parallel/stage_channel.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace tessera {

absl::Status StageChannel::SendNext(const StageHeader& header, TensorView hidden) {
  StageHeader h = header;
  RETURN_IF_ERROR(pp_->Send(TensorView::Of(&h, DType::kI32, {4}), pp_->rank() + 1, kHeaderTag));
  return pp_->Send(hidden, pp_->rank() + 1, kPayloadTag);
}

absl::StatusOr<uint32_t> StageChannel::RecvPrevious(const StageHeader& expected, TensorView hidden) {
  StageHeader h;
  RETURN_IF_ERROR(pp_->Recv(TensorView::Of(&h, DType::kI32, {4}), pp_->rank() - 1, kHeaderTag));
  if (h.n_tokens != expected.n_tokens || h.step != expected.step ||
      h.micro_batch != expected.micro_batch) {
    // Take the payload off the channel, so that the sender is not left waiting.
    if (h.n_tokens >= 0 && hidden.rank == 2) {
      std::vector<float> drain(static_cast<size_t>(h.n_tokens) * hidden.dim(1));
      (void)pp_->Recv(TensorView::Of(drain.data(), DType::kF32,
                                     {h.n_tokens, hidden.dim(1)}), pp_->rank() - 1, kPayloadTag);
    }
    return absl::InternalError(absl::StrCat(
        "pipeline stage ", pp_->rank(), " expected step ", expected.step, " micro-batch ",
        expected.micro_batch, " with ", expected.n_tokens, " tokens, but stage ",
        pp_->rank() - 1, " sent step ", h.step, " micro-batch ", h.micro_batch, " with ",
        h.n_tokens, " tokens"));
  }
  RETURN_IF_ERROR(pp_->Recv(hidden, pp_->rank() - 1, kPayloadTag));
  return h.flags;
}

}  // namespace tessera
