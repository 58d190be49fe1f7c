#include "methods/beacon/beacon_config.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/status_macros.h"
#include "nlohmann/json.hpp"
#include "runtime/file_io.h"
#include "runtime/json_fields.h"

namespace tessera::beacon {
namespace {

using nlohmann::json;
constexpr int32_t kMax = JsonFields::kInt32Max;

absl::Status SettingError(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("method.beacon.", field, " ", what));
}

// A ratio or stride mix names how several values are drawn per window or request.
absl::Status CheckMix(const JsonFields& f, absl::string_view key, size_t values,
                      int32_t* adapt_n) {
  ASSIGN_OR_RETURN(const std::string mix, f.String(key, "step-random"));
  if (values <= 1) return absl::OkStatus();  // one value: the mix is moot
  if (absl::StartsWith(mix, "adapt-") && adapt_n != nullptr) {
    int32_t n = 0;
    if (!absl::SimpleAtoi(mix.substr(6), &n) || n < 0) {
      return f.Error(key, absl::StrCat("\"", mix, "\" must be adapt-N with N >= 0"));
    }
    *adapt_n = n;
    return absl::OkStatus();
  }
  if (mix == "step-random" || mix == "instance-random" || mix == "mix-random") {
    return f.Error(key, absl::StrCat(
        "is \"", mix, "\": a random policy draws from one generator for the model's lifetime, "
        "so results would depend on the request history; refused at inference. Pin one value "
        "with method.beacon.", adapt_n != nullptr ? "ratios" : "stride",
        adapt_n != nullptr ? " (one ratio, or several for adapt-N)" : ""));
  }
  if (mix == "sequence") {
    return absl::UnimplementedError(absl::StrCat(f.where(), ": field \"", key,
                                                 "\" \"sequence\" is not supported; pin one value "
                                                 "with method.beacon.ratios"));
  }
  return f.Error(key, absl::StrCat("\"", mix, "\" is not a known mix"));
}

}  // namespace

absl::StatusOr<BeaconConfig> ResolveBeaconConfig(const config::BeaconSettings& s,
                                                 const ModelConfig& model) {
  json j = json::object();
  if (!model.source.empty()) {
    ASSIGN_OR_RETURN(const std::string text, ReadWholeFile(model.source));
    j = json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(model.source, ": not a valid JSON object"));
    }
  }
  const JsonFields f(j, model.source.empty() ? "config.json" : model.source);
  BeaconConfig c;
  c.max_positions = model.max_position_embeddings;
  auto note = [&](absl::string_view what, bool set, absl::string_view key) {
    c.provenance.push_back(absl::StrCat(what, ": ", set ? absl::StrCat("method.beacon.", what)
                                             : f.Has(key) ? absl::StrCat("config.json ", key)
                                                          : "default"));
  };
  // Window.
  ASSIGN_OR_RETURN(c.window, f.Int32("beacon_window", 1, kMax, 1024));
  if (s.has_window()) {
    if (s.window() < 1) return SettingError("window", "must be >= 1");
    c.window = s.window();
  }
  note("window", s.has_window(), "beacon_window");
  // Stride: one value (a list of one, or an int).
  std::vector<int32_t> strides{c.window};
  if (f.Has("beacon_stride")) {
    ASSIGN_OR_RETURN(strides, f.Int32OrList("beacon_stride", 1, kMax));
  }
  if (!s.has_stride()) RETURN_IF_ERROR(CheckMix(f, "beacon_stride_mix", strides.size(), nullptr));
  if (s.has_stride()) strides = {s.stride()};
  note("stride", s.has_stride(), "beacon_stride");
  if (strides.size() != 1) {
    return absl::UnimplementedError(absl::StrCat(
        f.where(), ": several beacon_stride values are not supported; pin one with "
        "method.beacon.stride"));
  }
  c.stride = strides[0];
  if (c.stride < 1 || c.stride > c.window) {
    const std::string what = absl::StrCat("is ", c.stride, "; it must be in [1, window ",
                                          c.window, "]");
    return s.has_stride() ? SettingError("stride", what) : f.Error("beacon_stride", what);
  }
  if (c.stride != c.window) {
    return absl::UnimplementedError(absl::StrCat(
        "Activation Beacon: stride ", c.stride, " below the window ", c.window,
        " (raw rows carried over and re-rotated at each condensation) is not supported; set "
        "method.beacon.stride to the window"));
  }
  // Mask and attend_previous.
  ASSIGN_OR_RETURN(const std::string attn, f.String("beacon_attn", "step-expansion"));
  if (attn == "step-expansion") {
    c.mask = BeaconMask::kStepExpansion;
  } else if (attn == "segmentation") {
    c.mask = BeaconMask::kSegmentation;
  } else if (attn == "full-coverage") {
    c.mask = BeaconMask::kFullCoverage;
  } else {
    return f.Error("beacon_attn", absl::StrCat("\"", attn, "\" is not step-expansion, "
                                               "segmentation or full-coverage"));
  }
  if (s.has_attention()) {
    c.mask = s.attention() == config::BeaconSettings::SEGMENTATION    ? BeaconMask::kSegmentation
             : s.attention() == config::BeaconSettings::FULL_COVERAGE ? BeaconMask::kFullCoverage
                                                                      : BeaconMask::kStepExpansion;
  }
  note("attention", s.has_attention(), "beacon_attn");
  ASSIGN_OR_RETURN(c.attend_previous, f.Bool("beacon_attend_previous", true));
  if (s.has_attend_previous()) c.attend_previous = s.attend_previous();
  note("attend_previous", s.has_attend_previous(), "beacon_attend_previous");
  // Ratios and their mix.
  int32_t adapt_n = 1024;
  if (f.Has("beacon_ratio")) {
    ASSIGN_OR_RETURN(c.ratios, f.Int32OrList("beacon_ratio", 0, kMax));
  }
  if (s.ratios_size() == 0) {
    RETURN_IF_ERROR(CheckMix(f, "beacon_ratio_mix", c.ratios.size(), &adapt_n));
  } else {
    c.ratios.assign(s.ratios().begin(), s.ratios().end());
  }
  note("ratios", s.ratios_size() > 0, "beacon_ratio");
  c.adapt_new_tokens = s.has_adapt_new_tokens() ? s.adapt_new_tokens() : adapt_n;
  if (c.adapt_new_tokens < 0) return SettingError("adapt_new_tokens", "must be >= 0");
  std::sort(c.ratios.begin(), c.ratios.end());
  c.ratios.erase(std::unique(c.ratios.begin(), c.ratios.end()), c.ratios.end());
  for (int32_t r : c.ratios) {
    std::string what;
    if (r < 1 || r > c.stride) {
      what = absl::StrCat("has ratio ", r, "; each must be in [1, stride ", c.stride,
                          "] (0, raw memory, is a training mode)");
    } else if (c.mask != BeaconMask::kFullCoverage && c.stride % r != 0) {
      what = absl::StrCat("has ratio ", r, ", which does not divide the stride ", c.stride);
    }
    if (!what.empty()) {
      return s.ratios_size() > 0 ? SettingError("ratios", what) : f.Error("beacon_ratio", what);
    }
  }
  // Parameters.
  if (f.Has("beacon_param")) {
    ASSIGN_OR_RETURN(const std::vector<std::string> params, f.StringList("beacon_param"));
    for (const std::string& p : params) {
      if (p == "mlp") {
        return absl::UnimplementedError(absl::StrCat(
            f.where(), ": beacon_param \"mlp\" (beacon_up_proj / beacon_down_proj) is not "
            "supported"));
      }
      if (p != "q" && p != "k" && p != "v" && p != "o") {
        return f.Error("beacon_param", absl::StrCat("has \"", p, "\"; expected q, k, v, o"));
      }
    }
    c.params_declared = true;
  }
  if (f.Has("retrieval_method") && !f.Raw("retrieval_method").is_null()) {
    return absl::UnimplementedError(absl::StrCat(
        f.where(), ": retrieval_method (BM25 windows) is not supported; remove it"));
  }
  // Room for the window and its beacons below max_position_embeddings.
  const int64_t top = c.window + BeaconsPerWindow(c, c.ratios.front());
  if (c.max_positions > 0 && top >= c.max_positions) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Activation Beacon: a window of ", c.window, " tokens and its beacons reach position ",
        top, ", past max_position_embeddings ", c.max_positions,
        "; lower method.beacon.window"));
  }
  return c;
}

int32_t ChooseRatio(const BeaconConfig& c, int64_t tokens) {
  for (int32_t r : c.ratios) {
    if ((c.max_positions - c.window) * static_cast<int64_t>(r) + c.window >=
        tokens + c.adapt_new_tokens) {
      return r;
    }
  }
  return c.ratios.back();
}

ModelOptions BeaconModelOptions(const BeaconConfig& c, const ModelConfig& m) {
  using Shard = ExtraWeight::Shard;
  const int64_t q = m.num_attention_heads * m.head_dim, kv = m.num_key_value_heads * m.head_dim;
  const std::string p = "model.layers.{layer}.self_attn.";
  ModelOptions o;
  o.extra_weights = {
      {"model.beacon_embed_tokens.weight", {1, m.hidden_size}, Shard::kReplicated, true},
      {p + "beacon_q_proj.weight", {q, m.hidden_size}, Shard::kHeadRows, !c.params_declared},
      {p + "beacon_k_proj.weight", {kv, m.hidden_size}, Shard::kKvHeadRows, !c.params_declared},
      {p + "beacon_v_proj.weight", {kv, m.hidden_size}, Shard::kKvHeadRows, !c.params_declared},
      {p + "beacon_o_proj.weight", {m.hidden_size, q}, Shard::kHeadColumns, !c.params_declared}};
  o.extension.count = 1;
  o.extension.embedding = o.extra_weights[0].name;
  o.extension.fallback_token = m.eos_token_ids.empty() ? 0 : m.eos_token_ids[0];
  o.extension.q = o.extra_weights[1].name;
  o.extension.k = o.extra_weights[2].name;
  o.extension.v = o.extra_weights[3].name;
  o.extension.o = o.extra_weights[4].name;
  return o;
}

}  // namespace tessera::beacon
