#include "parallel/stage_channel.h"

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace tessera {
namespace {

TensorView HeaderView(StageHeader* h) {
  return TensorView::Of(h, DType::kI32, {static_cast<int64_t>(sizeof(StageHeader) / 4)});
}

}  // namespace

absl::Status StageChannel::SendNext(const StageHeader& header, TensorView hidden,
                                    absl::Span<const int32_t> rows) {
  const bool subset = (header.message.flags & StageMessage::kRowSubset) != 0;
  if (header.n_tokens < 0 || (subset && static_cast<int64_t>(rows.size()) != header.n_tokens) ||
      (header.n_tokens > 0 && (hidden.rank != 2 || hidden.dim(0) != header.n_tokens))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "StageChannel::SendNext: header of ", header.n_tokens, " rows with ", rows.size(),
        " row indices and a payload of ", hidden.DebugString()));
  }
  StageHeader h = header;
  const int next = pp_->rank() + 1;
  RETURN_IF_ERROR(pp_->Send(HeaderView(&h), next, kHeaderTag));
  if (subset && !rows.empty()) {
    RETURN_IF_ERROR(pp_->Send(TensorView::Of(rows.data(), DType::kI32,
                                             {static_cast<int64_t>(rows.size())}),
                              next, kRowsTag));
  }
  if (header.n_tokens > 0) RETURN_IF_ERROR(pp_->Send(hidden, next, kPayloadTag));
  return absl::OkStatus();
}

absl::StatusOr<StageHeader> StageChannel::RecvHeader(int32_t step, int32_t micro_batch,
                                                     int64_t dim) {
  StageHeader h;
  RETURN_IF_ERROR(pp_->Recv(HeaderView(&h), pp_->rank() - 1, kHeaderTag));
  if (h.n_tokens < 0) {
    return absl::InternalError(absl::StrCat("pipeline stage ", pp_->rank(), " received a header ",
                                            "of ", h.n_tokens, " rows from stage ",
                                            pp_->rank() - 1));
  }
  if (h.step != step || h.micro_batch != micro_batch) {
    // Take the rest of the message off the channel, so that the sender is not left waiting.
    std::vector<int32_t> rows;
    (void)RecvRows(h, &rows);
    if (h.n_tokens > 0 && dim > 0) {
      std::vector<float> drain(static_cast<size_t>(h.n_tokens) * dim);
      (void)pp_->Recv(TensorView::Of(drain.data(), DType::kF32, {h.n_tokens, dim}),
                      pp_->rank() - 1, kPayloadTag);
    }
    return absl::InternalError(absl::StrCat(
        "pipeline stage ", pp_->rank(), " expected step ", step, " micro-batch ", micro_batch,
        ", but stage ", pp_->rank() - 1, " sent step ", h.step, " micro-batch ", h.micro_batch,
        " with ", h.n_tokens, " tokens"));
  }
  return h;
}

absl::Status StageChannel::RecvRows(const StageHeader& header, std::vector<int32_t>* rows) {
  rows->clear();
  if ((header.message.flags & StageMessage::kRowSubset) == 0 || header.n_tokens == 0) {
    return absl::OkStatus();
  }
  rows->resize(header.n_tokens);
  return pp_->Recv(TensorView::Of(rows->data(), DType::kI32, {header.n_tokens}), pp_->rank() - 1,
                   kRowsTag);
}

absl::Status StageChannel::RecvPayload(const StageHeader& header, TensorView hidden) {
  if (header.n_tokens == 0) return absl::OkStatus();
  if (hidden.rank != 2 || hidden.dim(0) != header.n_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("StageChannel::RecvPayload: the header says ",
                                                   header.n_tokens, " rows, the buffer is ",
                                                   hidden.DebugString()));
  }
  return pp_->Recv(hidden, pp_->rank() - 1, kPayloadTag);
}

}  // namespace tessera
