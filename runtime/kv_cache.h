// KvCache: per-layer key and value caches for a fixed number of sequence slots, whose entries
// are not positions.
//
// Layout per layer: K and V tensors (n_slots, capacity, kv_heads, head_dim) of the cache's dtype
// (F32, or F16 / BF16: K/V rounded to nearest even when written, widened to F32 when attention
// reads them), in the backend's memory. A sequence owns one slot for its lifetime. Each (layer, slot) holds
// `length` entries in rows [0, length); entry e stores the K/V of one token, already rotated at
// that token's position, and the cache records that position (host memory, replicated on every
// rank of a replica, since every rank sees the same batches). The forward pass appends a step's
// tokens after the slot's last entry (Append) and attention reads rows [0, length) of the slot.
// Methods drop or reorder entries (Compact) without renumbering positions: a key keeps the
// rotation of its original position, so attention over the kept entries equals attention over
// the kept tokens at their original positions.
//
// Layer indices are local to the pipeline stage (0 .. layers() - 1). Lengths may differ between
// layers (a method that prunes per layer, or runs deep layers on fewer tokens). Not
// thread-safe.
#ifndef TESSERA_RUNTIME_KV_CACHE_H_
#define TESSERA_RUNTIME_KV_CACHE_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

#include "runtime/model_config.h"
#include "runtime/tensor.h"

namespace tessera {

class KvCache {
 public:
  // The layers and KV heads one rank holds, in `backend`'s memory (which must outlive the
  // cache), stored as `dtype` (F32, F16 or BF16). Every slot starts empty. ResourceExhausted
  // when the memory cannot be had; InvalidArgument for another dtype or an empty shape.
  static absl::StatusOr<std::unique_ptr<KvCache>> Create(Backend* backend, int64_t layers,
                                                         int64_t kv_heads, int64_t head_dim,
                                                         int64_t n_slots, int64_t capacity,
                                                         DType dtype);

  // A cache whose layers all share ONE layer's storage (lengths and positions stay per layer):
  // a layer's entries are valid only until the next layer writes. For a pass that reads each
  // layer's entries only within that layer, e.g. HARP's reframed prefill of a whole sequence
  // that must not touch the real cache: one layer's K/V in memory instead of every layer's.
  // Compact is refused on it.
  static absl::StatusOr<std::unique_ptr<KvCache>> CreateLayerScratch(
      Backend* backend, int64_t layers, int64_t kv_heads, int64_t head_dim, int64_t n_slots,
      int64_t capacity, DType dtype);

  TensorView k(int64_t layer) const { return k_[shared_storage_ ? 0 : layer].view(); }
  TensorView v(int64_t layer) const { return v_[shared_storage_ ? 0 : layer].view(); }
  int64_t layers() const { return layers_; }
  bool shared_storage() const { return shared_storage_; }
  int64_t n_slots() const { return n_slots_; }
  // Entries a slot can hold per layer.
  int64_t max_seq() const { return capacity_; }
  DType dtype() const { return dtype_; }
  // Device bytes of the K and V tensors: layers x 2 x n_slots x capacity x kv_heads x head_dim x
  // DTypeSize(dtype()) (one layer's with shared storage).
  size_t bytes() const;

  // Entries of `slot` in `layer`, and the position of each.
  int32_t length(int64_t layer, int64_t slot) const { return lengths_[Index(layer, slot)]; }
  absl::Span<const int32_t> positions(int64_t layer, int64_t slot) const {
    return absl::MakeConstSpan(positions_.data() + Index(layer, slot) * capacity_,
                               length(layer, slot));
  }

  // Empties `slot` in every layer (a new sequence takes it). Entries are not erased: nothing
  // reads past a slot's length.
  void Clear(int64_t slot);
  // Empties every slot.
  void ClearAll();

  // Reserves entries for `positions.size()` new tokens of `slot` in `layer` and records their
  // positions; returns the first new entry. OutOfRange (nothing reserved) when the slot would
  // exceed the capacity. The caller writes the K/V rows (Backend::KvWrite).
  absl::StatusOr<int32_t> Append(int64_t layer, int64_t slot, absl::Span<const int32_t> positions);

  // Drops the entries past `length` (<= the current length) of `slot` in `layer`.
  absl::Status Truncate(int64_t layer, int64_t slot, int32_t length);

  // Keeps only the entries `keep` (strictly increasing, each < length) of `slot` in `layer`,
  // moved to rows [0, keep.size()) in that order with their positions; the length becomes
  // keep.size(). Enqueued on the backend (GatherRows); InvalidArgument for a bad keep list.
  absl::Status Compact(int64_t layer, int64_t slot, absl::Span<const int32_t> keep);
  // The same in every layer.
  absl::Status Compact(int64_t slot, absl::Span<const int32_t> keep);

  // Copies `count` entries of `src` (a cache of the same layers' shape and dtype, or this one)
  // from row `src_begin` of its (layer, src_slot) to rows [dst_begin, dst_begin + count) of this
  // cache's (layer, dst_slot), positions included; the destination's length becomes
  // dst_begin + count (dst_begin <= its length: entries after it are dropped). Enqueued on the
  // backend. A copy within one slot is refused (the rows could overlap).
  absl::Status CopyEntries(const KvCache& src, int64_t layer, int64_t src_slot,
                           int32_t src_begin, int32_t count, int64_t dst_slot, int32_t dst_begin);
  // Rows [begin, begin + count) of (layer, slot) become (row + row of (layer, other_slot) from
  // other_begin) / 2, keys and values (Backend::Average; positions unchanged). The two slots
  // must differ.
  absl::Status AverageEntries(int64_t layer, int64_t slot, int32_t begin, int64_t other_slot,
                              int32_t other_begin, int32_t count);

  // Bytes per cached token across all layers (keys and values) of a whole, unsharded model with
  // a cache of `dtype`.
  static size_t BytesPerToken(const ModelConfig& config, DType dtype);

 private:
  KvCache(Backend* backend, int64_t n_slots, int64_t capacity, DType dtype)
      : backend_(backend), n_slots_(n_slots), capacity_(capacity), dtype_(dtype) {}
  static absl::StatusOr<std::unique_ptr<KvCache>> Build(Backend* backend, int64_t layers,
                                                        int64_t kv_heads, int64_t head_dim,
                                                        int64_t n_slots, int64_t capacity,
                                                        DType dtype, bool shared_storage);
  int64_t Index(int64_t layer, int64_t slot) const { return layer * n_slots_ + slot; }
  absl::Status GatherSlotRows(TensorView cache, int64_t slot, int64_t count);
  // Rows [begin, begin + count) of `slot` in the layer tensor `cache`.
  TensorView SlotRows(TensorView cache, int64_t slot, int64_t begin, int64_t count) const;
  absl::Status CheckEntries(absl::string_view op, int64_t layer, int64_t slot, int64_t begin,
                            int64_t count, int64_t limit) const;

  Backend* backend_;
  int64_t n_slots_, capacity_;
  DType dtype_;
  int64_t layers_ = 0;
  bool shared_storage_ = false;
  std::vector<Tensor> k_, v_;
  std::vector<int32_t> lengths_;    // [layers, n_slots]
  std::vector<int32_t> positions_;  // [layers, n_slots, capacity]
  // Compact's device scratch: the gather indices, identity indices, and one slot's rows (of the
  // cache's dtype).
  Tensor keep_, identity_, scratch_;
};

}  // namespace tessera

#endif  // TESSERA_RUNTIME_KV_CACHE_H_
