// `tessera bench`: throughput figures as ratios against limits measured in the same run.
//
// Decode at batch 1 reads every weight once per token, so its floor is weight bytes / memory
// bandwidth; prefill is GEMM-bound, so its peer is OpenBLAS's sgemm rate on a layer-shaped GEMM.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "kernels/cpu/machine_probes.h"
#include "kernels/status_macros.h"
#include "launcher/commands.h"
#include "launcher/flags.h"
#include "launcher/model_bundle.h"
#include "nlohmann/json.hpp"
#include "runtime/philox.h"

namespace tessera {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// FLOPs of the linear layers for `tokens` tokens (attention scores and softmax excluded).
double LinearFlops(const ModelConfig& c, int64_t tokens) {
  const double q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  const double per_layer = c.hidden_size * (q + 2 * kv) + q * c.hidden_size +
                           3.0 * c.hidden_size * c.intermediate_size;
  return 2.0 * tokens * per_layer * c.num_hidden_layers;
}

}  // namespace

absl::Status RunBench() {
  const int32_t prompt_tokens = absl::GetFlag(FLAGS_prompt_tokens);
  const int32_t decode_tokens = absl::GetFlag(FLAGS_decode_tokens);
  const int32_t batch = absl::GetFlag(FLAGS_batch);
  if (prompt_tokens < 1 || decode_tokens < 1 || batch < 1) {
    return absl::InvalidArgumentError("--prompt-tokens, --decode-tokens and --batch must be >= 1");
  }
  ASSIGN_OR_RETURN(ModelBundle b, LoadModelBundle(absl::GetFlag(FLAGS_model),
                                                  absl::GetFlag(FLAGS_backend),
                                                  /*require_tokenizer=*/false));
  const ModelConfig& c = b.model->config();
  if (prompt_tokens + decode_tokens + 1 > c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("--prompt-tokens + --decode-tokens exceed the "
                                                   "model's context of ",
                                                   c.max_position_embeddings));
  }
  KvCache cache(c, batch, prompt_tokens + decode_tokens + 1);
  Tensor logits;

  // Page the weights in once so timings measure memory, not the first read from disk.
  ForwardBatch warm{{c.bos_token_id}, {0}, {0}, {0}};
  RETURN_IF_ERROR(b.model->Forward(warm, cache, &logits));

  ForwardBatch prefill;
  for (int32_t s = 0; s < batch; ++s) {
    for (int32_t p = 0; p < prompt_tokens; ++p) {
      const uint32_t bits = Philox4x32({static_cast<uint32_t>(s), static_cast<uint32_t>(p), 0, 0},
                                       {0x7e55e7a, 0})[0];
      prefill.tokens.push_back(static_cast<int32_t>(bits % c.vocab_size));
      prefill.positions.push_back(p);
      prefill.slots.push_back(s);
    }
    prefill.logit_rows.push_back((s + 1) * prompt_tokens - 1);
  }
  auto start = Clock::now();
  RETURN_IF_ERROR(b.model->Forward(prefill, cache, &logits));
  const double prefill_s = SecondsSince(start);

  double decode_s = 0.0;
  for (int32_t step = 0; step < decode_tokens; ++step) {
    ForwardBatch d;
    for (int32_t s = 0; s < batch; ++s) {
      const float* row = logits.data<float>() + s * c.vocab_size;
      d.tokens.push_back(static_cast<int32_t>(std::max_element(row, row + c.vocab_size) - row));
      d.positions.push_back(prompt_tokens + step);
      d.slots.push_back(s);
      d.logit_rows.push_back(s);
    }
    start = Clock::now();
    RETURN_IF_ERROR(b.model->Forward(d, cache, &logits));
    decode_s += SecondsSince(start);
  }
  const double step_s = decode_s / decode_tokens;

  // Bytes a decode step streams: every weight but the untied embedding table (of which it reads
  // only `batch` rows).
  const LlamaWeights& w = b.model->weights();
  const bool tied = w.lm_head.data == w.embed.data;
  const double step_bytes = static_cast<double>(w.bytes) - (tied ? 0.0 : w.embed.bytes());
  const double bandwidth = cpu::MeasureReadBandwidth(size_t{1} << 30, 5);
  const double prefill_flops = LinearFlops(c, int64_t{batch} * prompt_tokens) / prefill_s;
  const double sgemm_flops = cpu::MeasureSgemmFlops(int64_t{batch} * prompt_tokens, c.intermediate_size,
                                                    c.hidden_size, 3);
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);

  nlohmann::json out = {
      {"model", absl::GetFlag(FLAGS_model)},
      {"backend", b.backend->name()},
      {"batch", batch},
      {"prompt_tokens", prompt_tokens},
      {"decode_tokens", decode_tokens},
      {"weight_bytes", w.bytes},
      {"weight_dtype", std::string(DTypeName(w.layers[0].wq.dtype))},
      {"prefill_tokens_per_s", batch * prompt_tokens / prefill_s},
      {"prefill_linear_gflops", prefill_flops / 1e9},
      {"sgemm_gflops_same_shape", sgemm_flops / 1e9},
      {"prefill_vs_sgemm", prefill_flops / sgemm_flops},
      {"decode_ms_per_step", step_s * 1e3},
      {"decode_tokens_per_s", batch / step_s},
      {"decode_weight_bytes_per_step", step_bytes},
      {"decode_bytes_per_s", step_bytes / step_s},
      {"memory_read_bandwidth_bytes_per_s", bandwidth},
      {"decode_bandwidth_fraction", step_bytes / step_s / bandwidth},
      {"peak_rss_bytes", static_cast<int64_t>(usage.ru_maxrss) * 1024},
  };
  std::printf("%s\n", out.dump(2).c_str());
  return absl::OkStatus();
}

}  // namespace tessera
