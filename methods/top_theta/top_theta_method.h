// TopThetaMethod: Top-theta and Top-k sparse attention (shared/specs/top_theta.md) as the runtime
// sees it (methods/method.h), built from config::SparseAttentionSettings. It changes attention
// in every pass (generation, scoring, benchmarks) through LlamaModel::SetAttentionPolicy and
// leaves the steps to the plain step engine.
//
// Configure reads calibration_dir/th.txt (Top-theta) and sdc.txt (offline SDC) — or, without
// them, calibration_dir/thresholds.safetensors — on every rank and checks them against config.json (heads, layers, each layer's k); Attach slices them to the
// rank's layers and query heads.
//
//   registry.Register("sparse_attention", "...", TopThetaMethod::Create);
#ifndef TESSERA_METHODS_TOP_THETA_TOP_THETA_METHOD_H_
#define TESSERA_METHODS_TOP_THETA_TOP_THETA_METHOD_H_

#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "configs/method_settings.pb.h"
#include "methods/method.h"
#include "methods/top_theta/sparse_attention_policy.h"
#include "methods/top_theta/threshold_table.h"

namespace tessera::top_theta {

// k of every global layer: settings.k (default 256) with the layer_k overrides. Errors name the
// field when a layer_k entry is past the model's layers.
absl::StatusOr<std::vector<int32_t>> LayerKs(const config::SparseAttentionSettings& settings,
                                             int64_t num_layers);
// The variant's kind, placement, compensation and flags from the settings (k and tables unset).
AttentionVariant BaseVariant(const config::SparseAttentionSettings& settings);

class TopThetaMethod : public Method {
 public:
  static absl::StatusOr<std::unique_ptr<Method>> Create(const config::MethodSettings& settings);

  absl::string_view field() const override { return "sparse_attention"; }
  absl::Status Configure(const ModelConfig& config) override;
  absl::Status Attach(LlamaModel& model) override;
  // kept_elements_{prefill,decode}, visible_elements_* [layers * heads]; kept_vrows_*,
  // visible_vrows_* [layers * kv_heads]; query_rows_* [1] (counted on tp rank 0 of stage 0).
  absl::StatusOr<std::map<std::string, std::vector<int64_t>>> RunCounters() override;

  SparseAttentionPolicy* policy() const { return policy_.get(); }

 private:
  explicit TopThetaMethod(config::SparseAttentionSettings settings)
      : settings_(std::move(settings)) {}

  config::SparseAttentionSettings settings_;
  ModelConfig config_;
  std::vector<int32_t> layer_k_;
  std::optional<ThresholdTable> thresholds_, missing_mass_;
  ShardPlan plan_;
  std::unique_ptr<SparseAttentionPolicy> policy_;
};

}  // namespace tessera::top_theta

#endif  // TESSERA_METHODS_TOP_THETA_TOP_THETA_METHOD_H_
