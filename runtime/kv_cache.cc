#include "runtime/kv_cache.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace tessera {

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::Create(Backend* backend, int64_t layers,
                                                          int64_t kv_heads, int64_t head_dim,
                                                          int64_t n_slots, int64_t capacity,
                                                          DType dtype) {
  return Build(backend, layers, kv_heads, head_dim, n_slots, capacity, dtype, false);
}

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::CreateLayerScratch(
    Backend* backend, int64_t layers, int64_t kv_heads, int64_t head_dim, int64_t n_slots,
    int64_t capacity, DType dtype) {
  return Build(backend, layers, kv_heads, head_dim, n_slots, capacity, dtype, true);
}

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::Build(Backend* backend, int64_t layers,
                                                         int64_t kv_heads, int64_t head_dim,
                                                         int64_t n_slots, int64_t capacity,
                                                         DType dtype, bool shared_storage) {
  if (dtype != DType::kF32 && dtype != DType::kF16 && dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat("KvCache: the cache dtype must be F32, F16 or ",
                                                   "BF16, got ", DTypeName(dtype)));
  }
  if (layers < 0 || kv_heads < 1 || head_dim < 1 || n_slots < 1 || capacity < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KvCache: needs at least one slot and one entry per slot, got ", n_slots, " slots of ",
        capacity, " entries (", layers, " layers, ", kv_heads, " KV heads of ", head_dim, ")"));
  }
  std::unique_ptr<KvCache> cache(new KvCache(backend, n_slots, capacity, dtype));
  const std::vector<int64_t> dims = {n_slots, capacity, kv_heads, head_dim};
  cache->layers_ = layers;
  cache->shared_storage_ = shared_storage;
  for (int64_t l = 0; l < (shared_storage ? std::min<int64_t>(layers, 1) : layers); ++l) {
    for (std::vector<Tensor>* kv : {&cache->k_, &cache->v_}) {
      kv->emplace_back(backend, dtype);
      RETURN_IF_ERROR(kv->back().Resize(dims));
    }
  }
  cache->lengths_.assign(layers * n_slots, 0);
  cache->positions_.assign(layers * n_slots * capacity, 0);
  cache->keep_ = Tensor(backend, DType::kI32);
  cache->identity_ = Tensor(backend, DType::kI32);
  cache->scratch_ = Tensor(backend, dtype);
  return cache;
}

size_t KvCache::bytes() const {
  size_t total = 0;
  for (size_t l = 0; l < k_.size(); ++l) total += k_[l].view().bytes() + v_[l].view().bytes();
  return total;
}

void KvCache::Clear(int64_t slot) {
  for (int64_t l = 0; l < layers(); ++l) lengths_[Index(l, slot)] = 0;
}

void KvCache::ClearAll() { std::fill(lengths_.begin(), lengths_.end(), 0); }

absl::StatusOr<int32_t> KvCache::Append(int64_t layer, int64_t slot,
                                        absl::Span<const int32_t> positions) {
  if (layer < 0 || layer >= layers() || slot < 0 || slot >= n_slots_) {
    return absl::OutOfRangeError(absl::StrCat("KvCache: layer ", layer, " slot ", slot,
                                              " does not exist (", layers(), " layers, ",
                                              n_slots_, " slots)"));
  }
  int32_t& length = lengths_[Index(layer, slot)];
  if (length + static_cast<int64_t>(positions.size()) > capacity_) {
    return absl::OutOfRangeError(absl::StrCat(
        "KV cache slot ", slot, " holds ", length, " entries and cannot take ", positions.size(),
        " more: its capacity is ", capacity_, " entries; use a longer cache (max_seq_len)"));
  }
  const int32_t first = length;
  std::copy(positions.begin(), positions.end(),
            positions_.begin() + Index(layer, slot) * capacity_ + first);
  length += static_cast<int32_t>(positions.size());
  return first;
}

absl::Status KvCache::Truncate(int64_t layer, int64_t slot, int32_t length) {
  if (layer < 0 || layer >= layers() || slot < 0 || slot >= n_slots_ || length < 0 ||
      length > lengths_[Index(layer, slot)]) {
    return absl::OutOfRangeError(absl::StrCat("KvCache::Truncate: layer ", layer, " slot ", slot,
                                              " cannot be cut to ", length, " entries"));
  }
  lengths_[Index(layer, slot)] = length;
  return absl::OkStatus();
}

// Rows keep_[0, count) of `slot` in `cache` to rows [0, count), through scratch_ (a gather may
// not write the rows it reads).
absl::Status KvCache::GatherSlotRows(TensorView cache, int64_t slot, int64_t count) {
  const int64_t row = cache.row_size() / capacity_;
  const TensorView slot_rows =
      cache.Rows(slot, slot + 1).Reshaped({capacity_, row});
  RETURN_IF_ERROR(scratch_.Resize({count, row}));
  const TensorView scratch = scratch_.view();
  RETURN_IF_ERROR(backend_->GatherRows({slot_rows, keep_.view().Rows(0, count), scratch}));
  return backend_->GatherRows(
      {scratch, identity_.view().Rows(0, count), slot_rows.Rows(0, count)});
}

absl::Status KvCache::Compact(int64_t layer, int64_t slot, absl::Span<const int32_t> keep) {
  if (layer < 0 || layer >= layers() || slot < 0 || slot >= n_slots_) {
    return absl::OutOfRangeError(absl::StrCat("KvCache::Compact: layer ", layer, " slot ", slot,
                                              " does not exist"));
  }
  if (shared_storage_) {
    return absl::FailedPreconditionError(
        "KvCache::Compact: the layers of this scratch cache share one storage; its entries "
        "cannot be compacted");
  }
  const int32_t length = lengths_[Index(layer, slot)];
  for (size_t i = 0; i < keep.size(); ++i) {
    if (keep[i] < 0 || keep[i] >= length || (i > 0 && keep[i] <= keep[i - 1])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "KvCache::Compact: the kept entries must be strictly increasing and below the slot's ",
          "length ", length, "; element ", i, " is ", keep[i]));
    }
  }
  const int64_t count = static_cast<int64_t>(keep.size());
  if (count == length) return absl::OkStatus();  // strictly increasing and all kept: identity
  if (count > 0) {
    if (identity_.view().rank == 0) {  // first compaction: 0, 1, ..., capacity - 1
      std::vector<int32_t> iota(capacity_);
      std::iota(iota.begin(), iota.end(), 0);
      RETURN_IF_ERROR(identity_.Resize({capacity_}));
      RETURN_IF_ERROR(
          backend_->CopyToDevice(identity_.view().data, iota.data(), capacity_ * sizeof(int32_t)));
    }
    // The previous compaction's gathers may still read keep_ on a device backend.
    RETURN_IF_ERROR(backend_->Synchronize());
    RETURN_IF_ERROR(keep_.Resize({count}));
    RETURN_IF_ERROR(backend_->CopyToDevice(keep_.view().data, keep.data(), count * sizeof(int32_t)));
    RETURN_IF_ERROR(GatherSlotRows(k_[layer].view(), slot, count));
    RETURN_IF_ERROR(GatherSlotRows(v_[layer].view(), slot, count));
  }
  int32_t* positions = positions_.data() + Index(layer, slot) * capacity_;
  for (int64_t i = 0; i < count; ++i) positions[i] = positions[keep[i]];
  lengths_[Index(layer, slot)] = static_cast<int32_t>(count);
  return absl::OkStatus();
}

absl::Status KvCache::Compact(int64_t slot, absl::Span<const int32_t> keep) {
  for (int64_t l = 0; l < layers(); ++l) RETURN_IF_ERROR(Compact(l, slot, keep));
  return absl::OkStatus();
}

TensorView KvCache::SlotRows(TensorView cache, int64_t slot, int64_t begin, int64_t count) const {
  const int64_t row = cache.row_size() / capacity_;
  return cache.Rows(slot, slot + 1).Reshaped({capacity_, row}).Rows(begin, begin + count);
}

absl::Status KvCache::CheckEntries(absl::string_view op, int64_t layer, int64_t slot,
                                   int64_t begin, int64_t count, int64_t limit) const {
  if (layer < 0 || layer >= layers() || slot < 0 || slot >= n_slots_ || begin < 0 || count < 0 ||
      begin + count > limit) {
    return absl::OutOfRangeError(absl::StrCat("KvCache::", op, ": layer ", layer, " slot ", slot,
                                              " has no entries [", begin, ", ", begin + count,
                                              ") (limit ", limit, ")"));
  }
  return absl::OkStatus();
}

absl::Status KvCache::CopyEntries(const KvCache& src, int64_t layer, int64_t src_slot,
                                  int32_t src_begin, int32_t count, int64_t dst_slot,
                                  int32_t dst_begin) {
  if (&src == this && src_slot == dst_slot) {
    return absl::InvalidArgumentError("KvCache::CopyEntries: source and destination slot are one");
  }
  if (src.layers() != layers() || src.dtype() != dtype() || shared_storage_ ||
      src.shared_storage_ || src.k(0).row_size() / src.capacity_ != k(0).row_size() / capacity_) {
    return absl::InvalidArgumentError(
        "KvCache::CopyEntries: the caches differ in layers, KV heads, head_dim or dtype");
  }
  RETURN_IF_ERROR(src.CheckEntries("CopyEntries", layer, src_slot, src_begin, count,
                                   src.length(layer, src_slot)));
  RETURN_IF_ERROR(CheckEntries("CopyEntries", layer, dst_slot, dst_begin, count, capacity_));
  if (dst_begin > length(layer, dst_slot)) {
    return absl::OutOfRangeError(absl::StrCat("KvCache::CopyEntries: row ", dst_begin,
                                              " is past the destination's length ",
                                              length(layer, dst_slot)));
  }
  if (count > 0) {
    for (const bool keys : {true, false}) {
      const TensorView from =
          src.SlotRows(keys ? src.k(layer) : src.v(layer), src_slot, src_begin, count);
      const TensorView to = SlotRows(keys ? k(layer) : v(layer), dst_slot, dst_begin, count);
      RETURN_IF_ERROR(backend_->CopyWithinDevice(to.data, from.data, to.bytes()));
    }
  }
  const absl::Span<const int32_t> positions = src.positions(layer, src_slot);
  std::copy(positions.begin() + src_begin, positions.begin() + src_begin + count,
            positions_.begin() + Index(layer, dst_slot) * capacity_ + dst_begin);
  lengths_[Index(layer, dst_slot)] = dst_begin + count;
  return absl::OkStatus();
}

absl::Status KvCache::AverageEntries(int64_t layer, int64_t slot, int32_t begin,
                                     int64_t other_slot, int32_t other_begin, int32_t count) {
  if (slot == other_slot) {
    return absl::InvalidArgumentError("KvCache::AverageEntries: the two slots must differ");
  }
  RETURN_IF_ERROR(CheckEntries("AverageEntries", layer, slot, begin, count, length(layer, slot)));
  RETURN_IF_ERROR(CheckEntries("AverageEntries", layer, other_slot, other_begin, count,
                               length(layer, other_slot)));
  if (count == 0) return absl::OkStatus();
  for (const TensorView cache : {k(layer), v(layer)}) {
    const TensorView mine = SlotRows(cache, slot, begin, count);
    RETURN_IF_ERROR(
        backend_->Average({mine, SlotRows(cache, other_slot, other_begin, count), mine}));
  }
  return absl::OkStatus();
}

size_t KvCache::BytesPerToken(const ModelConfig& c, DType dtype) {
  return static_cast<size_t>(2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim) *
         DTypeSize(dtype);
}

}  // namespace tessera
