#include "launcher/methods/run_methods.h"

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "methods/registry.h"
#include "runtime/model_config.h"

namespace tessera {

absl::StatusOr<RunMethods> PrepareMethods(const config::MethodSettings& settings,
                                          const std::string& model_dir, bool check_agreement) {
  RunMethods run;
  ASSIGN_OR_RETURN(run.methods, BuiltInMethods().Create(settings));
  if (run.methods.empty()) return run;
  ASSIGN_OR_RETURN(const ModelConfig config, LoadModelConfig(model_dir));
  for (auto& m : run.methods) {
    RETURN_IF_ERROR(m->Configure(config));
    m->CheckRankAgreement(check_agreement);
  }
  run.options = MergedModelOptions(run.methods);
  return run;
}

absl::Status AttachMethods(RunMethods& run, LlamaModel& model) {
  for (auto& m : run.methods) {
    RETURN_IF_ERROR(m->Attach(model));
    if (m->Runner() == nullptr) continue;
    if (run.runner != nullptr) {
      return absl::UnimplementedError(absl::StrCat(
          "method.", m->field(), ": runs generation steps itself, and so does another method of "
          "this run; combining them is not supported: keep one"));
    }
    run.runner = m->Runner();
  }
  return absl::OkStatus();
}

bool HasCounters(const SequenceCounters& c) {
  return !c.token_layers.empty() || !c.values.empty() || !c.series.empty();
}

nlohmann::json MethodCountersJson(const SequenceCounters& c) {
  nlohmann::json j = c.values;
  for (const auto& [name, values] : c.series) j[name] = values;
  if (c.token_layers.empty()) return j;  // a method that does not change the depth
  j["token_layers"] = c.token_layers;
  double layers = 0;
  for (int32_t l : c.token_layers) layers += l;
  j["mean_layers_per_token"] = layers / c.token_layers.size();
  return j;
}

namespace {

// Sums int64 values over `world` exactly: each as two I32 words of 20 and 31 bits (exact for
// values below 2^51 on up to 2048 ranks).
absl::Status SumOverWorld(Communicator& world, std::vector<int64_t>& values) {
  if (world.size() == 1 || values.empty()) return absl::OkStatus();
  const int64_t n = static_cast<int64_t>(values.size());
  std::vector<int32_t> words(2 * n);
  for (int64_t i = 0; i < n; ++i) {
    words[2 * i] = static_cast<int32_t>(values[i] & 0xFFFFF);
    words[2 * i + 1] = static_cast<int32_t>(values[i] >> 20);
  }
  RETURN_IF_ERROR(
      world.AllReduce(TensorView::Of(words.data(), DType::kI32, {2 * n}), ReduceOp::kSum));
  for (int64_t i = 0; i < n; ++i) {
    values[i] = static_cast<int64_t>(words[2 * i]) + (static_cast<int64_t>(words[2 * i + 1]) << 20);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<nlohmann::json> MethodRunCountersJson(RunMethods& run, Communicator& world,
                                                     int64_t num_layers) {
  nlohmann::json out = nlohmann::json::object();
  for (auto& m : run.methods) {
    ASSIGN_OR_RETURN(auto counters, m->RunCounters());
    if (counters.empty()) continue;
    // The same names in the same order on every rank (std::map), so the reductions line up.
    for (auto& [name, values] : counters) RETURN_IF_ERROR(SumOverWorld(world, values));
    nlohmann::json j = nlohmann::json::object();
    for (const auto& [name, values] : counters) {
      if (name.rfind("kept_", 0) == 0) {
        const std::string rest = name.substr(5);
        auto visible = counters.find("visible_" + rest);
        if (visible == counters.end()) continue;
        double kept_total = 0, visible_total = 0;
        for (int64_t v : values) kept_total += static_cast<double>(v);
        for (int64_t v : visible->second) visible_total += static_cast<double>(v);
        nlohmann::json entry = {{"kept", kept_total},
                                {"visible", visible_total},
                                {"fraction", visible_total > 0 ? kept_total / visible_total : 0.0}};
        const int64_t per = num_layers > 0 ? static_cast<int64_t>(values.size()) / num_layers : 0;
        if (per > 0 && per * num_layers == static_cast<int64_t>(values.size())) {
          nlohmann::json layers = nlohmann::json::array();
          for (int64_t l = 0; l < num_layers; ++l) {
            double k = 0, v = 0;
            for (int64_t i = l * per; i < (l + 1) * per; ++i) {
              k += static_cast<double>(values[i]);
              v += static_cast<double>(visible->second[i]);
            }
            layers.push_back(v > 0 ? k / v : 0.0);
          }
          entry["per_layer"] = layers;
        }
        j[rest] = entry;
      } else if (name.rfind("visible_", 0) != 0) {
        double total = 0;
        for (int64_t v : values) total += static_cast<double>(v);
        j[name] = total;
      }
    }
    out[std::string(m->field())] = j;
  }
  return out;
}

}  // namespace tessera
