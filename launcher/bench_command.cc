// `tessera bench`: throughput figures as ratios against limits measured in the same run.
//
// Decode at batch 1 reads every weight once per token, so its floor is weight bytes / memory
// bandwidth; prefill is GEMM-bound, so its peer is OpenBLAS's sgemm rate on a layer-shaped GEMM.
// Under a parallel layout every rank runs the same generation; rank 0 prints the figures with
// per-rank loaded bytes and time spent in tensor- and pipeline-parallel communication.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/machine_probes.h"
#if defined(TESSERA_WITH_CUDA)
#include "kernels/cuda/cuda_probes.h"
#endif
#include "kernels/status_macros.h"
#include "launcher/commands.h"
#include "launcher/flags.h"
#include "launcher/methods/run_methods.h"
#include "launcher/model_bundle.h"
#include "nlohmann/json.hpp"
#include "parallel/timed_communicator.h"
#include "runtime/context_limit.h"
#include "runtime/generator.h"
#include "runtime/memory_plan.h"
#include "kernels/philox.h"

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

std::vector<GenerationRequest> RandomRequests(const ModelConfig& c, int count, int prompt_tokens,
                                              int new_tokens) {
  std::vector<GenerationRequest> requests(count);
  for (int s = 0; s < count; ++s) {
    for (int p = 0; p < prompt_tokens; ++p) {
      const uint32_t bits = Philox4x32({static_cast<uint32_t>(s), static_cast<uint32_t>(p), 0, 0},
                                       {0x7e55e7a, 0})[0];
      requests[s].prompt_ids.push_back(static_cast<int32_t>(bits % c.vocab_size));
    }
    requests[s].max_new_tokens = new_tokens;
    requests[s].ignore_eos = true;
  }
  return requests;
}

struct Timed {
  double prefill_s = 0, decode_s = 0, comm_s = 0;
  std::map<std::string, double> method;  // a method's counters, summed over the sequences
};

// Generates `new_tokens` for `batch` sequences; prefill time is the time to the first token.
absl::StatusOr<Timed> TimeGeneration(LlamaModel& model, int batch, int prompt_tokens,
                                     int new_tokens, int micro_batches, int max_seq_len,
                                     std::vector<TimedCommunicator*> comms, StepRunner* runner) {
  Generator generator(&model, nullptr,
                      {.max_batch = batch,
                       .micro_batches = micro_batches,
                       .max_seq_len = max_seq_len,
                       .runner = runner});
  for (TimedCommunicator* c : comms) c->Reset();
  const auto start = Clock::now();
  ASSIGN_OR_RETURN(auto results, generator.Generate(
                                     RandomRequests(model.config(), batch, prompt_tokens, new_tokens)));
  Timed t;
  const double total = SecondsSince(start);
  t.prefill_s = results[0].time_to_first_token_ms / 1e3;
  t.decode_s = total - t.prefill_s;
  for (TimedCommunicator* c : comms) t.comm_s += c->seconds();
  for (const GenerationResult& r : results) {
    for (const auto& [name, value] : r.counters.values) t.method[name] += value;
  }
  return t;
}

}  // namespace

absl::Status RunBench(Job& job, const config::MethodSettings& method_settings) {
  const int32_t prompt_tokens = absl::GetFlag(FLAGS_prompt_tokens);
  const int32_t decode_tokens = absl::GetFlag(FLAGS_decode_tokens);
  const int32_t batch = absl::GetFlag(FLAGS_batch);
  if (prompt_tokens < 1 || decode_tokens < 1 || batch < 1) {
    return absl::InvalidArgumentError("--prompt-tokens, --decode-tokens and --batch must be >= 1");
  }
  // Time spent communicating: the tp and pp groups are wrapped in timers.
  auto tp = std::make_unique<TimedCommunicator>(std::move(job.groups.tp));
  auto pp = std::make_unique<TimedCommunicator>(std::move(job.groups.pp));
  std::vector<TimedCommunicator*> comms = {tp.get(), pp.get()};
  absl::StatusOr<std::vector<int64_t>> stage_layers = StageLayersFromFlags();
  RETURN_IF_ERROR(CheckPhase(job, stage_layers.status()));
  ModelParallelism parallel{job.layout(), tp.get(), pp.get(), *stage_layers};
  absl::StatusOr<DType> kv_dtype = KvDTypeFromFlags();
  RETURN_IF_ERROR(CheckPhase(job, kv_dtype.status()));
  parallel.kv_dtype = *kv_dtype;
  // A method (early exit) runs in every timed generation: decode figures are the method's.
  absl::StatusOr<RunMethods> methods = PrepareMethods(
      method_settings, absl::GetFlag(FLAGS_model), absl::GetFlag(FLAGS_check_rank_agreement));
  RETURN_IF_ERROR(CheckPhase(job, methods.status()));
  ASSIGN_OR_RETURN(ModelBundle b, LoadModelForJob(job, absl::GetFlag(FLAGS_model),
                                                  absl::GetFlag(FLAGS_backend),
                                                  /*require_tokenizer=*/false, parallel,
                                                  methods->options));
  b.methods = *std::move(methods);
  RETURN_IF_ERROR(CheckPhase(job, AttachMethods(b.methods, *b.model)));
  // On GPUs the model talks over NCCL communicators of its own: time those too.
  for (TimedCommunicator* c : {b.device_tp.get(), b.device_pp.get()}) {
    if (c != nullptr) comms.push_back(c);
  }
  const int32_t max_seq_len = absl::GetFlag(FLAGS_max_seq_len);
  ASSIGN_OR_RETURN(const int64_t limit, ContextLimit(b.model->config(), max_seq_len));
  // A method that compresses prompts (HOMER) holds fewer entries than the prompt's tokens.
  const int64_t held = b.methods.runner != nullptr ? b.methods.runner->PromptEntries(prompt_tokens)
                                                   : prompt_tokens;
  if (held + decode_tokens + 1 > limit) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--prompt-tokens + --decode-tokens + 1 exceed the context of ", limit,
        max_seq_len > 0 ? " (--max-seq-len)" : " (max_position_embeddings)",
        ContextLimitHint(b.model->config(), max_seq_len, prompt_tokens + decode_tokens + 1)));
  }
  const ModelConfig& c = b.model->config();
  LlamaModel& model = *b.model;

  // The machine's bandwidth is probed before and after the timed runs and the better figure
  // kept: on a shared host it drifts, and the ratio should be against what memory can give.
  double bandwidth_before = 0;
  if (job.is_root() && b.backend->kind() == BackendKind::kCpu) {
    bandwidth_before = cpu::MeasureReadBandwidth(size_t{1} << 30, 5);
  }
  // A first short run pages the weights in, so timings measure memory, not the disk.
  absl::StatusOr<Timed> single = TimeGeneration(model, 1, 4, 2, 1, max_seq_len, comms, b.methods.runner);
  if (single.ok()) {
    single = TimeGeneration(model, 1, prompt_tokens, decode_tokens + 1, 1, max_seq_len, comms, b.methods.runner);
  }
  RETURN_IF_ERROR(CheckPhase(job, single.status()));
  absl::StatusOr<Timed> batched, batched_one_micro;
  if (batch > 1) {
    batched = TimeGeneration(model, batch, prompt_tokens, decode_tokens + 1, 0, max_seq_len, comms, b.methods.runner);
    if (batched.ok() && job.layout().pp > 1) {
      batched_one_micro =
          TimeGeneration(model, batch, prompt_tokens, decode_tokens + 1, 1, max_seq_len, comms, b.methods.runner);
      RETURN_IF_ERROR(CheckPhase(job, batched_one_micro.status()));
    }
    RETURN_IF_ERROR(CheckPhase(job, batched.status()));
  }

  // Per-rank figures to rank 0: loaded bytes, layer bytes, stage layer bytes, and communication
  // nanoseconds, as 64-bit integers (gathered as raw bytes).
  Communicator& world = *job.groups.world;
  const LlamaWeights& w = model.weights();
  int64_t mine[4] = {static_cast<int64_t>(w.bytes), static_cast<int64_t>(w.layer_bytes),
                     static_cast<int64_t>(w.stage_layer_bytes),
                     static_cast<int64_t>(single->comm_s * 1e9)};
  std::vector<int64_t> all(4 * world.size());
  RETURN_IF_ERROR(world.AllGather(TensorView::Of(mine, DType::kU8, {sizeof(mine)}),
                                  TensorView::Of(all.data(), DType::kU8,
                                                 {static_cast<int64_t>(all.size() * 8)})));
  // Sparse attention's kept elements and V rows over every pass of the run (all ranks).
  ASSIGN_OR_RETURN(const nlohmann::json method_run,
                   MethodRunCountersJson(b.methods, world, b.model->config().num_hidden_layers));
  if (!job.is_root()) return absl::OkStatus();

  // Bytes a decode step streams on this rank: its weights but the untied embedding table.
  const bool tied = w.lm_head.data == w.embed.data;
  const double step_bytes = static_cast<double>(w.bytes) - (tied ? 0.0 : w.embed.bytes());
  const double step_s = single->decode_s / decode_tokens;
  // The peers: this device's memory bandwidth and its BLAS rate on a layer-shaped GEMM.
  double bandwidth = 0, sgemm_flops = 0;
  if (b.backend->kind() == BackendKind::kCpu) {
    bandwidth = std::max(bandwidth_before, cpu::MeasureReadBandwidth(size_t{1} << 30, 5));
    sgemm_flops = cpu::MeasureSgemmFlops(prompt_tokens, c.intermediate_size, c.hidden_size, 3);
  } else {
#if defined(TESSERA_WITH_CUDA)
    ASSIGN_OR_RETURN(bandwidth, cuda::MeasureDeviceReadBandwidth(size_t{2} << 30, 10));
    ASSIGN_OR_RETURN(sgemm_flops, cuda::MeasureGemmFlops(prompt_tokens, c.intermediate_size,
                                                          c.hidden_size, w.layers[0].wq.dtype, 5));
#endif
  }
  const double prefill_flops = LinearFlops(c, prompt_tokens) / single->prefill_s;
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  nlohmann::json ranks = nlohmann::json::array();
  for (int r = 0; r < world.size(); ++r) {
    ranks.push_back({{"rank", r},
                     {"weight_bytes_loaded", all[4 * r]},
                     {"layer_bytes_loaded", all[4 * r + 1]},
                     {"stage_layer_bytes", all[4 * r + 2]},
                     {"layer_fraction_loaded", static_cast<double>(all[4 * r + 1]) / all[4 * r + 2]},
                     {"comm_ms_per_decode_token", all[4 * r + 3] * 1e-6 / decode_tokens}});
  }
  nlohmann::json out = {
      {"model", absl::GetFlag(FLAGS_model)},
      {"backend", b.backend->name()},
      {"layout", {{"tp", job.layout().tp}, {"pp", job.layout().pp}, {"dp", job.layout().dp}}},
      {"threads_per_rank", CpuBackend::threads()},
      {"prompt_tokens", prompt_tokens},
      {"decode_tokens", decode_tokens},
      {"weight_bytes_rank0", w.bytes},
      {"weight_dtype", std::string(DTypeName(w.layers[0].wq.dtype))},
      {"kv_dtype", ShortDTypeName(parallel.kv_dtype)},
      {"prefill_tokens_per_s", prompt_tokens / single->prefill_s},
      {"prefill_linear_gflops", prefill_flops / 1e9},
      {"blas_gflops_same_shape", sgemm_flops / 1e9},
      {"prefill_vs_blas", prefill_flops / sgemm_flops},
      {"decode_ms_per_token", step_s * 1e3},
      {"decode_weight_bytes_per_token_rank0", step_bytes},
      {"decode_bytes_per_s_rank0", step_bytes / step_s},
      {"memory_read_bandwidth_bytes_per_s", bandwidth},
      {"decode_bandwidth_fraction", step_bytes / step_s / bandwidth},
      {"peak_rss_bytes_rank0", static_cast<int64_t>(usage.ru_maxrss) * 1024},
      {"ranks", ranks},
  };
  // A method's counters of the timed runs (HARP: hesitations, reframed passes, recomputed
  // tokens), so that its decode figures can be read against what it did.
  if (!single->method.empty()) out["method_counters"] = single->method;
  if (!method_run.empty()) out["method_run"] = method_run;
  if (batch > 1) {
    out["batch"] = batch;
    out["batched_decode_tokens_per_s"] = batch * decode_tokens / batched->decode_s;
    out["batched_prefill_tokens_per_s"] = batch * prompt_tokens / batched->prefill_s;
    // Every prompt and generated token over the whole run (prefill + decode), as
    // llama.cpp's batched-bench reports its total speed.
    out["batched_end_to_end_tokens_per_s"] =
        batch * (prompt_tokens + decode_tokens) / (batched->prefill_s + batched->decode_s);
    if (!batched->method.empty()) out["batched_method_counters"] = batched->method;
    if (job.layout().pp > 1) {
      out["batched_decode_tokens_per_s_one_micro_batch"] =
          batch * decode_tokens / batched_one_micro->decode_s;
    }
  }
  std::printf("%s\n", out.dump(2).c_str());
  return absl::OkStatus();
}

}  // namespace tessera
