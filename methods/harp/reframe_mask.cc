#include "methods/harp/reframe_mask.h"

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "runtime/llama_model.h"

namespace tessera {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

PhiloxKey HarpMaskKey(uint64_t seed, uint64_t request_id) {
  const uint64_t key = SplitMix64(SplitMix64(seed) ^ request_id);
  return {static_cast<uint32_t>(key), static_cast<uint32_t>(key >> 32)};
}

std::array<uint32_t, 4> HarpMaskRowWords(PhiloxKey key, int32_t position, int32_t step) {
  return {key[0], key[1], static_cast<uint32_t>(position), static_cast<uint32_t>(step)};
}

void ReframeInput::SetRows(std::vector<std::array<uint32_t, 4>> rows, float delta,
                           InputHook* observer) {
  observer_ = observer;
  words_.clear();
  for (const auto& r : rows) words_.insert(words_.end(), r.begin(), r.end());
  delta_ = delta;
}

absl::Status ReframeInput::OnEmbeddings(const LayerContext& ctx) {
  const int64_t rows = ctx.hidden.dim(0);
  if (static_cast<int64_t>(words_.size()) != 4 * rows) {
    return absl::InternalError(absl::StrCat("HARP: the reframed pass has ", rows,
                                            " rows but mask words for ", words_.size() / 4));
  }
  if (device_words_.view().rank == 0) device_words_ = Tensor(ctx.backend, DType::kI32);
  RETURN_IF_ERROR(device_words_.Resize({rows, 4}));
  RETURN_IF_ERROR(ctx.backend->CopyToDevice(device_words_.view().data, words_.data(),
                                            words_.size() * sizeof(uint32_t)));
  RETURN_IF_ERROR(
      ctx.backend->PhiloxDropout({ctx.hidden, device_words_.view(), kHarpStream, delta_}));
  ctx.message->flags |= kReframedPassFlag;
  return observer_ == nullptr ? absl::OkStatus() : observer_->OnEmbeddings(ctx);
}

absl::StatusOr<LayerAction> ReframeTagCheck::AfterLayer(const LayerContext& ctx) {
  if (ctx.plan->first_stage() || ctx.local_layer != 0) return LayerAction::Continue();
  if ((ctx.message->flags & kReframedPassFlag) == 0) {
    return absl::InternalError(absl::StrCat(
        "HARP: pipeline stage ", ctx.plan->pp_rank, " is running the reframed pass of step ",
        ctx.batch->step, " but the header from stage ", ctx.plan->pp_rank - 1,
        " does not carry the REFRAME tag; the stages disagree on which pass this is"));
  }
  return LayerAction::Continue();
}

}  // namespace tessera
