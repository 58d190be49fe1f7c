#include "methods/top_theta/threshold_table.h"

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"

namespace tessera::top_theta {

absl::StatusOr<ThresholdTable> ThresholdTable::Build(const std::vector<CalibratedBin>& bins,
                                                     const std::string& path, BinFile kind,
                                                     int64_t heads,
                                                     const std::vector<int32_t>& layer_k,
                                                     int32_t n_lo, int32_t n_hi) {
  const int64_t layers = static_cast<int64_t>(layer_k.size());
  if (bins.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": holds no calibrated bin"));
  }
  // (layer, head) -> n -> value
  std::map<std::pair<int32_t, int32_t>, std::map<int32_t, float>> by_head;
  ThresholdTable t;
  t.heads_ = heads;
  t.n_lo_ = bins[0].n;
  t.n_hi_ = bins[0].n;
  for (const CalibratedBin& b : bins) {
    const std::string bin = absl::StrCat("L", b.layer, "_H", b.head, ":", b.n);
    if (b.layer >= layers) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": bin ", bin, " names layer ", b.layer, " but the model has ", layers,
                       " layers; the file was calibrated for another model"));
    }
    if (b.head >= heads) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": bin ", bin, " names head ", b.head, " but the model has ", heads,
                       " attention heads; the file was calibrated for another model"));
    }
    const int32_t k = layer_k[b.layer];
    if (k == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": layer ", b.layer,
                       " is calibrated, but its k is 0 (dense) in this run; set its "
                       "k (method.sparse_attention.k / layer_k) to the file's or recalibrate"));
    }
    if (kind == BinFile::kThresholds && b.k != k) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": layer ", b.layer, " was calibrated for k = ", b.k,
                       ", but this run's k for it "
                       "is ",
                       k, "; set method.sparse_attention.k / layer_k to ", b.k,
                       " or recalibrate with `tessera calibrate` for k = ", k));
    }
    by_head[{b.layer, b.head}][b.n] = static_cast<float>(b.value);
    t.n_lo_ = std::min(t.n_lo_, b.n);
    t.n_hi_ = std::max(t.n_hi_, b.n);
  }
  if (n_lo > 0) {
    t.n_lo_ = std::min(t.n_lo_, n_lo);
    t.n_hi_ = std::max(t.n_hi_, n_hi);
  }
  t.layers_.resize(layers);
  const int64_t width = t.bins();
  for (int64_t l = 0; l < layers; ++l) {
    if (layer_k[l] == 0) continue;
    std::vector<float>& table = t.layers_[l];
    table.resize(heads * width);
    for (int64_t h = 0; h < heads; ++h) {
      auto it = by_head.find({static_cast<int32_t>(l), static_cast<int32_t>(h)});
      if (it == by_head.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": layer ", l, " head ", h, " has no calibrated bin, but layer ", l,
                         " has k = ", layer_k[l],
                         "; recalibrate with `tessera calibrate` (every sample must be "
                         "longer than k + 1 tokens somewhere) or set its k to 0 with layer_k"));
      }
      const std::map<int32_t, float>& row = it->second;
      for (int32_t n = t.n_lo_; n <= t.n_hi_; ++n) {
        auto above = row.lower_bound(n);  // the first calibrated n' >= n
        float value;
        if (above == row.end()) {
          value = std::prev(above)->second;
        } else if (above->first == n || above == row.begin()) {
          value = above->second;
        } else {
          auto below = std::prev(above);  // a tie goes to the smaller n'
          value = n - below->first <= above->first - n ? below->second : above->second;
        }
        table[h * width + (n - t.n_lo_)] = value;
      }
    }
  }
  return t;
}

float ThresholdTable::At(int64_t layer, int64_t head, int64_t n) const {
  const int64_t column = std::clamp<int64_t>(n, n_lo_, n_hi_) - n_lo_;
  return layers_[layer][head * bins() + column];
}

std::vector<float> ThresholdTable::Slice(int64_t layer, int64_t head_begin,
                                         int64_t head_end) const {
  const std::vector<float>& table = layers_[layer];
  if (table.empty()) return {};
  return std::vector<float>(table.begin() + head_begin * bins(), table.begin() + head_end * bins());
}

}  // namespace tessera::top_theta
