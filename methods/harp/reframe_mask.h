// The reframed pass's input (shared/specs/harp.md §2.3, §6): elementwise dropout of rate delta on
// the input embeddings of every position, without the 1 / (1 - delta) rescaling, from a counter
// keyed by logical coordinates only, so that the mask is the same at every layout, batch
// composition and backend:
//   key     = SplitMix64(SplitMix64(seed) ^ request_id), as (low, high) 32-bit words;
//   counter = (h / 4, position p, step t, kHarpStream), word h % 4 of Philox4x32-10;
//   element (p, h) is dropped (set to +0) iff (word >> 8) * 2^-24 < delta.
// t is the index of the token the pass predicts (the sequence's length), so each hesitation
// draws a fresh mask and a replayed request draws the same ones. Drop iff u < delta (the
// reference keeps iff u > delta): delta = 0 never drops. Sampling draws from its own key
// (runtime/sampler.h), so a reframed pass never moves another step's sampling noise.
//
// On the first stage ReframeInput applies the mask (Backend::PhiloxDropout) and tags the stage
// message; on later stages ReframeTagCheck refuses a pass whose header lacks the tag, so that no
// stage ever runs a reframed pass believing it is a plain one.
#ifndef TESSERA_METHODS_HARP_REFRAME_MASK_H_
#define TESSERA_METHODS_HARP_REFRAME_MASK_H_

#include <array>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "kernels/philox.h"
#include "runtime/forward_hooks.h"
#include "runtime/tensor.h"

namespace tessera {

// Counter word 3 of every HARP mask: (reframe index 0 << 16) | 'HR'.
inline constexpr uint32_t kHarpStream = 0x4852u;
// The step word of SHADOW_LAZY's masks: one mask per position for the whole sequence, so that
// the reframed view can be cached and extended (instead of a fresh mask per hesitation).
inline constexpr int32_t kShadowStep = -1;
// The stage-message flag of a reframed pass (a method bit, StageMessage::kMethodFlagsMask).
inline constexpr uint32_t kReframedPassFlag = 1u << 8;

uint64_t SplitMix64(uint64_t x);
PhiloxKey HarpMaskKey(uint64_t seed, uint64_t request_id);
// PhiloxDropoutArgs::row_words of the token at `position` in the pass predicting token `step`.
std::array<uint32_t, 4> HarpMaskRowWords(PhiloxKey key, int32_t position, int32_t step);

// InputHook of the reframed pass: the mask on the embeddings of the rows set by SetRows.
class ReframeInput : public InputHook {
 public:
  ReframeInput() = default;
  // One entry of row words per token of the pass, in batch order; `delta` the drop rate;
  // `observer` (may be null, not owned) is called on the masked embeddings.
  void SetRows(std::vector<std::array<uint32_t, 4>> rows, float delta, InputHook* observer);
  absl::Status OnEmbeddings(const LayerContext& ctx) override;

 private:
  std::vector<uint32_t> words_;  // [rows, 4]
  float delta_ = 0.0f;
  InputHook* observer_ = nullptr;
  Tensor device_words_;
};

// LayerHook of the reframed pass: on a stage after the first, fails unless the received header
// carries kReframedPassFlag (checked at the stage's first layer).
class ReframeTagCheck : public LayerHook {
 public:
  absl::StatusOr<LayerAction> AfterLayer(const LayerContext& ctx) override;
};

}  // namespace tessera

#endif  // TESSERA_METHODS_HARP_REFRAME_MASK_H_
