// Fuzzes config.json and generation_config.json parsing. The input is config.json, optionally
// followed by a NUL byte and generation_config.json (absent when there is no NUL). Both files are
// written to a model directory and read by LoadModelConfig; ParseModelConfig also reads the
// first part directly. A config that loads must satisfy what the model code relies on.
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "runtime/model_config.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

void CheckInvariants(const tessera::ModelConfig& c) {
  bool ok = c.hidden_size > 0 && c.intermediate_size > 0 && c.num_hidden_layers > 0 &&
            c.num_attention_heads > 0 && c.num_key_value_heads > 0 &&
            c.num_attention_heads % c.num_key_value_heads == 0 && c.head_dim > 0 &&
            c.head_dim % 2 == 0 && c.vocab_size > 0 && c.max_position_embeddings > 0 &&
            c.rms_norm_eps > 0 && std::isfinite(c.rms_norm_eps) && c.rope_theta > 0 &&
            std::isfinite(c.rope_theta) && c.rope_scaling.factor >= 1 &&
            std::isfinite(c.rope_scaling.factor) && std::isfinite(c.rope_scaling.low_freq_factor) &&
            std::isfinite(c.rope_scaling.high_freq_factor) &&
            c.rope_scaling.original_max_position_embeddings > 0 &&
            c.bos_token_id >= 0 && c.bos_token_id < c.vocab_size;
  for (int32_t id : c.eos_token_ids) ok = ok && id >= 0 && id < c.vocab_size;
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace fuzz = tessera::fuzz;
  const std::vector<std::string> parts = fuzz::SplitAtNul(fuzz::AsText(data, size), 2);
  auto direct = tessera::ParseModelConfig(parts[0], "config.json");
  if (direct.ok()) CheckInvariants(*direct);

  fuzz::WriteScratchFile("config.json", parts[0]);
  const std::string gen = fuzz::ScratchDir() + "/generation_config.json";
  if (parts.size() > 1) {
    fuzz::WriteScratchFile("generation_config.json", parts[1]);
  } else {
    std::remove(gen.c_str());
  }
  auto loaded = tessera::LoadModelConfig(fuzz::ScratchDir());
  if (loaded.ok()) CheckInvariants(*loaded);
  if (loaded.ok() && !direct.ok()) std::abort();  // generation_config.json cannot repair config
  return 0;
}
