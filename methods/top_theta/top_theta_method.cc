#include "methods/top_theta/top_theta_method.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "runtime/file_io.h"
#include "kernels/status_macros.h"
#include "methods/top_theta/threshold_safetensors.h"

namespace tessera::top_theta {

using config::SparseAttentionSettings;

absl::StatusOr<std::vector<int32_t>> LayerKs(const SparseAttentionSettings& s, int64_t num_layers) {
  std::vector<int32_t> k(num_layers, s.has_k() ? s.k() : 256);
  for (int i = 0; i < s.layer_k_size(); ++i) {
    const config::LayerK& lk = s.layer_k(i);
    if (lk.layer() < 0 || lk.layer() >= num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("method.sparse_attention.layer_k[", i, "].layer: ", lk.layer(),
                       " is not a layer of this model (it has ", num_layers, " layers: 0..",
                       num_layers - 1, ")"));
    }
    k[lk.layer()] = lk.k();
  }
  return k;
}

AttentionVariant BaseVariant(const SparseAttentionSettings& s) {
  using V = AttentionVariant;
  V v;
  v.kind = s.kind() == SparseAttentionSettings::TOP_THETA ? V::Kind::kTopTheta : V::Kind::kTopK;
  v.placement = s.placement() == SparseAttentionSettings::POST_SOFTMAX ? V::Placement::kPostSoftmax
                                                                       : V::Placement::kPreSoftmax;
  switch (s.sdc()) {
    case SparseAttentionSettings::SDC_EXACT:
      v.sdc = V::Compensation::kExact;
      break;
    case SparseAttentionSettings::SDC_EXP_THRESHOLD:
      v.sdc = V::Compensation::kExpThreshold;
      break;
    case SparseAttentionSettings::SDC_OFFLINE_CALIBRATED:
      v.sdc = V::Compensation::kOffline;
      break;
    default:
      v.sdc = V::Compensation::kNone;
  }
  v.sdc_scale = s.has_sdc_scale() ? s.sdc_scale() : 1.0f;
  v.vmc = s.vmc();
  v.cap_k = s.cap_k();
  v.empty_row_zero = s.empty_row() == SparseAttentionSettings::EMPTY_ROW_ZERO;
  return v;
}

namespace {

bool FileExists(const std::string& path) { return CheckIsFile(path).ok(); }

}  // namespace

absl::StatusOr<std::unique_ptr<Method>> TopThetaMethod::Create(
    const config::MethodSettings& settings) {
  return std::unique_ptr<Method>(new TopThetaMethod(settings.sparse_attention()));
}

absl::Status TopThetaMethod::Configure(const ModelConfig& config) {
  config_ = config;
  ASSIGN_OR_RETURN(layer_k_, LayerKs(settings_, config.num_hidden_layers));
  const bool theta = settings_.kind() == SparseAttentionSettings::TOP_THETA;
  const bool offline = settings_.sdc() == SparseAttentionSettings::SDC_OFFLINE_CALIBRATED;
  if (!theta && !offline) return absl::OkStatus();
  const std::string dir = settings_.calibration_dir();
  std::vector<CalibratedBin> th, sdc;
  const std::string th_path = dir + "/th.txt", sdc_path = dir + "/sdc.txt";
  // The text files (the reference's format) first; else the binary archive.
  const std::string archive_path = dir + "/thresholds.safetensors";
  const bool text = (theta && FileExists(th_path)) || (!theta && FileExists(sdc_path));
  std::string th_source = th_path, sdc_source = sdc_path;
  if (!text && FileExists(archive_path)) {
    ASSIGN_OR_RETURN(ThresholdArchive archive, ReadThresholdSafetensors(archive_path));
    th = std::move(archive.thresholds);
    sdc = std::move(archive.missing_mass);
    th_source = sdc_source = archive_path;
    if (offline && sdc.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          archive_path, ": holds no missing_mass, which sdc: SDC_OFFLINE_CALIBRATED needs; "
          "calibrate with it or give sdc.txt"));
    }
  } else {
    if (theta) {
      ASSIGN_OR_RETURN(th, ReadBins(th_path, BinFile::kThresholds));
    }
    if (offline) {
      ASSIGN_OR_RETURN(sdc, ReadBins(sdc_path, BinFile::kMissingMass));
    }
  }
  // One column range for both tables (the attention op takes one bin_begin).
  int32_t n_lo = 0, n_hi = 0;
  for (const auto* bins : {&th, &sdc}) {
    for (const CalibratedBin& b : *bins) {
      n_lo = n_lo == 0 ? b.n : std::min(n_lo, b.n);
      n_hi = std::max(n_hi, b.n);
    }
  }
  const int64_t heads = config.num_attention_heads;
  if (theta) {
    ASSIGN_OR_RETURN(thresholds_, ThresholdTable::Build(th, th_source, BinFile::kThresholds,
                                                        heads, layer_k_, n_lo, n_hi));
  }
  if (offline) {
    ASSIGN_OR_RETURN(missing_mass_, ThresholdTable::Build(sdc, sdc_source,
                                                          BinFile::kMissingMass, heads, layer_k_,
                                                          n_lo, n_hi));
  }
  return absl::OkStatus();
}

absl::Status TopThetaMethod::Attach(LlamaModel& model) {
  plan_ = model.plan();
  std::vector<SparseAttentionPolicy::Layer> layers(plan_.layers());
  int32_t bin_begin = 1;
  int64_t bins = 1;
  for (const auto& table : {thresholds_, missing_mass_}) {
    if (table.has_value()) {
      bin_begin = table->n_lo();
      bins = table->bins();
    }
  }
  const int64_t h0 = plan_.head_begin, h1 = plan_.head_begin + plan_.heads;
  for (int64_t l = 0; l < plan_.layers(); ++l) {
    const int64_t global = plan_.layer_begin + l;
    layers[l].k = layer_k_[global];
    if (thresholds_) layers[l].thresholds = thresholds_->Slice(global, h0, h1);
    if (missing_mass_) layers[l].missing_mass = missing_mass_->Slice(global, h0, h1);
  }
  policy_ =
      std::make_unique<SparseAttentionPolicy>(BaseVariant(settings_), std::move(layers), bin_begin,
                                              bins, &model.backend(), plan_.heads, plan_.kv_heads);
  model.SetAttentionPolicy(policy_.get());
  return absl::OkStatus();
}

absl::StatusOr<std::map<std::string, std::vector<int64_t>>> TopThetaMethod::RunCounters() {
  std::map<std::string, std::vector<int64_t>> out;
  if (policy_ == nullptr) return out;
  RETURN_IF_ERROR(policy_->Flush());
  const AttentionCounters& c = policy_->counters();
  const int64_t layers = config_.num_hidden_layers, heads = config_.num_attention_heads,
                kv_heads = config_.num_key_value_heads;
  // With KV heads replicated over tp ranks (tp > kv heads), every rank holding a copy counts
  // the union over its own query heads of the group: the kept V rows are then a sum of partial
  // unions, an upper bound of the group's union, and the visible rows are counted once (by the
  // rank holding the group's first query head).
  const int64_t group = heads / kv_heads;
  const bool counts_visible_vrows = plan_.head_begin % group == 0;
  const char* phases[] = {"prefill", "decode"};
  for (int p = 0; p < 2; ++p) {
    std::vector<int64_t> kept(layers * heads, 0), visible(layers * heads, 0);
    std::vector<int64_t> vrows(layers * kv_heads, 0), vvisible(layers * kv_heads, 0);
    for (int64_t l = 0; l < c.layers; ++l) {
      const int64_t global = plan_.layer_begin + l;
      for (int64_t h = 0; h < c.heads; ++h) {
        kept[global * heads + plan_.head_begin + h] = c.kept[p][l * c.heads + h];
        visible[global * heads + plan_.head_begin + h] = c.visible[p][l * c.heads + h];
      }
      for (int64_t g = 0; g < c.kv_heads; ++g) {
        vrows[global * kv_heads + plan_.kv_head_begin + g] += c.vrows[p][l * c.kv_heads + g];
        if (counts_visible_vrows) {
          vvisible[global * kv_heads + plan_.kv_head_begin + g] +=
              c.vrows_visible[p][l * c.kv_heads + g];
        }
      }
    }
    const std::string phase = phases[p];
    out["kept_elements_" + phase] = std::move(kept);
    out["visible_elements_" + phase] = std::move(visible);
    out["kept_vrows_" + phase] = std::move(vrows);
    out["visible_vrows_" + phase] = std::move(vvisible);
    out["query_rows_" + phase] = {plan_.tp_rank == 0 && plan_.first_stage() ? c.rows[p] : 0};
  }
  return out;
}

}  // namespace tessera::top_theta
