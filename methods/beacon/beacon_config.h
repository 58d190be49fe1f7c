// Activation Beacon's configuration (shared/specs/beacon.md §3): the checkpoint's config.json
// beacon_* keys, each overridden by the run's config::BeaconSettings field when that is set, with
// the reference configuration class's defaults where both are silent; and the tensors the model
// must load for it (§2).
//
//   ASSIGN_OR_RETURN(BeaconConfig c, ResolveBeaconConfig(settings, model_config));
//   options.extra_weights = BeaconWeights(c, model_config);
//   int32_t r = ChooseRatio(c, prompt_tokens);
#ifndef TESSERA_METHODS_BEACON_BEACON_CONFIG_H_
#define TESSERA_METHODS_BEACON_BEACON_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "configs/method_settings.pb.h"
#include "runtime/model_config.h"
#include "runtime/model_options.h"

namespace tessera::beacon {

enum class BeaconMask { kStepExpansion, kSegmentation, kFullCoverage };

struct BeaconConfig {
  int32_t window = 1024;             // W
  int32_t stride = 1024;             // S (== W: carried raw rows are not supported)
  std::vector<int32_t> ratios{8};    // several: adapt-N
  int32_t adapt_new_tokens = 1024;   // N
  BeaconMask mask = BeaconMask::kStepExpansion;
  bool attend_previous = true;
  // Whether config.json lists beacon_param: its projections must then all be in the checkpoint.
  bool params_declared = false;
  int64_t max_positions = 0;         // max_position_embeddings
  // Where each value came from ("config.json beacon_window", "method.beacon.window", "default"),
  // for the run's notice.
  std::vector<std::string> provenance;
};

// config.json (model.source) is read again for its beacon_* keys. InvalidArgument naming the file
// and key, or the settings field, for: a stride above the window, a ratio that does not divide
// the stride (except full-coverage) or exceeds it, a random ratio or stride mix
// (step-random, instance-random, mix-random: results would depend on the request history), an
// unknown beacon_attn, a window that leaves no room below max_position_embeddings.
// Unimplemented: a stride below the window (carried raw rows), several strides, the "sequence"
// ratio mix, beacon MLP parameters, retrieval.
absl::StatusOr<BeaconConfig> ResolveBeaconConfig(const config::BeaconSettings& settings,
                                                 const ModelConfig& model);

// Beacons per full window with ratio r: S / r.
inline int32_t BeaconsPerWindow(const BeaconConfig& c, int32_t ratio) { return c.stride / ratio; }

// The reference's adapt-N: the smallest ratio whose capacity (max_positions - W) * r + W covers
// `tokens` + N, else the largest; the only ratio when there is one.
int32_t ChooseRatio(const BeaconConfig& c, int64_t tokens);

// The official tensor names, optional unless config.json declares beacon_param:
//   model.beacon_embed_tokens.weight                  [1, hidden]           replicated
//   model.layers.{layer}.self_attn.beacon_q_proj.weight [heads * d, hidden] like q_proj
//   ...beacon_k_proj / beacon_v_proj                  [kv_heads * d, hidden] like k/v_proj
//   ...beacon_o_proj                                  [hidden, heads * d]    like o_proj
// and the extension rows they make (the beacon token is id vocab_size; without its embedding it
// embeds as the first EOS token, without a projection the layer's own is used: the reference's
// initialisation).
ModelOptions BeaconModelOptions(const BeaconConfig& c, const ModelConfig& model);

}  // namespace tessera::beacon

#endif  // TESSERA_METHODS_BEACON_BEACON_CONFIG_H_
