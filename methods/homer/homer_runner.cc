#include "methods/homer/homer_runner.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "runtime/context_limit.h"

namespace tessera::homer {

HomerConfig ResolveSettings(const config::HomerSettings& s, const ModelConfig& model) {
  HomerConfig c;
  c.schedule.max_chunk_len = s.has_max_chunk_len() ? s.max_chunk_len() : 2048;
  c.schedule.target_len = s.has_target_len() ? s.target_len() : 2048;
  c.schedule.layers_warmup = s.has_layers_warmup() ? s.layers_warmup() : 12;
  c.schedule.layers = model.num_hidden_layers;
  c.prefix_len = s.has_prefix_len() ? s.prefix_len() : 100;
  c.suffix_len = s.has_suffix_len() ? s.suffix_len() : 100;
  c.position_limit = RopeExtendsContext(model) ? 0 : model.max_position_embeddings;
  return c;
}

std::pair<int64_t, int64_t> SplitPrompt(const HomerConfig& c, int64_t tokens) {
  // One chunk, nothing pruned: the split does not change the result (spec §8.1).
  if (tokens <= std::min(c.schedule.max_chunk_len, c.schedule.target_len)) return {0, 1};
  return {c.prefix_len, c.suffix_len};
}

HomerRunner::HomerRunner(LlamaModel* model, HomerConfig config, std::unique_ptr<BiasTable> bias)
    : model_(model),
      config_(config),
      bias_(std::move(bias)),
      prefill_(model, PrefillOptions{config.schedule, bias_.get(), false}) {}

int64_t HomerRunner::PromptEntries(int64_t prompt_tokens) const {
  return std::min(prompt_tokens, config_.schedule.target_len);
}

absl::Status HomerRunner::StartSequence(int32_t slot, uint64_t request_id) {
  sequences_[slot] = SequenceState();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> HomerRunner::Prefill(size_t micro_batch,
                                                        const ForwardBatch& batch,
                                                        int32_t logit_index, int32_t slot,
                                                        KvCache& cache,
                                                        const StepReduction& reduction) {
  std::vector<int32_t> tokens;
  for (size_t i = 0; i < batch.tokens.size(); ++i) {
    if (batch.slots[i] == slot) tokens.push_back(batch.tokens[i]);
  }
  const int64_t length = static_cast<int64_t>(tokens.size());
  const auto [prefix, suffix] = SplitPrompt(config_, length);
  ASSIGN_OR_RETURN(const PrefillResult result, prefill_.Run(tokens, prefix, suffix));
  RETURN_IF_ERROR(prefill_.CopyInto(result, cache, slot));
  SequenceState& state = sequences_[slot];
  state.prefilled = true;
  state.position_shift = static_cast<int32_t>(result.next_position - length);
  auto& v = state.counters.values;
  v["homer_chunks"] = static_cast<double>(result.schedule.chunks);
  v["homer_levels"] = static_cast<double>(result.schedule.height);
  v["homer_nodes"] = static_cast<double>(result.nodes);
  v["homer_cache_entries"] = static_cast<double>(result.positions.size());
  v["homer_next_position"] = static_cast<double>(result.next_position);
  // The K/V the tree needed on this rank: h + 2 slots of max_chunk_len entries (DFS-bounded).
  const KvCache& tree = prefill_.tree_cache();
  v["homer_tree_kv_bytes"] = static_cast<double>(tree.bytes() / tree.n_slots()) *
                             static_cast<double>(result.schedule.height + 2);
  if (result.logits.empty()) return std::vector<float>();
  ForwardOutput out;
  out.logits = result.logits;
  out.logit_rows = {logit_index};
  return reduction.reduce(micro_batch, batch, out);
}

absl::StatusOr<std::vector<float>> HomerRunner::Run(const std::vector<ForwardBatch>& micro_batches,
                                                    KvCache& cache,
                                                    const StepReduction& reduction) {
  const ShardPlan& plan = model_->plan();
  const size_t width = reduction.words_per_row;
  std::vector<float> words;
  for (size_t g = 0; g < micro_batches.size(); ++g) {
    const ForwardBatch& batch = micro_batches[g];
    std::vector<float> part(batch.logit_rows.size() * width, 0.0f);
    auto place = [&](const std::vector<int32_t>& rows, const std::vector<float>& got) {
      for (size_t j = 0; j < rows.size() && (j + 1) * width <= got.size(); ++j) {
        std::copy(got.begin() + j * width, got.begin() + (j + 1) * width,
                  part.begin() + rows[j] * width);
      }
    };
    std::set<int32_t> prompt_slots;
    for (int32_t slot : batch.slots) {
      if (!sequences_[slot].prefilled) prompt_slots.insert(slot);
    }
    // Decode rows: the plain pass at the shifted positions.
    ForwardBatch decode;
    decode.step = batch.step;
    decode.micro_batch = batch.micro_batch;
    std::vector<int32_t> new_row(batch.tokens.size(), -1);
    for (size_t i = 0; i < batch.tokens.size(); ++i) {
      const int32_t slot = batch.slots[i];
      if (prompt_slots.count(slot)) continue;
      new_row[i] = static_cast<int32_t>(decode.tokens.size());
      const int32_t position = batch.positions[i] + sequences_[slot].position_shift;
      if (config_.position_limit > 0 && position >= config_.position_limit) {
        return absl::InvalidArgumentError(absl::StrCat(
            "HOMER: a generated token would sit at position ", position, ", past the model's ",
            config_.position_limit, "-token window (plain RoPE): the compressed prompt's "
            "next position is ", sequences_[slot].counters.values["homer_next_position"],
            "; lower method.homer.max_chunk_len (half the window leaves the other half for "
            "generation) or generate fewer tokens"));
      }
      decode.tokens.push_back(batch.tokens[i]);
      decode.positions.push_back(position);
      decode.slots.push_back(slot);
    }
    std::vector<int32_t> decode_index;  // the batch's logit index of each decode logit row
    for (size_t r = 0; r < batch.logit_rows.size(); ++r) {
      const int32_t row = new_row[batch.logit_rows[r]];
      if (row < 0) continue;
      decode.logit_rows.push_back(row);
      decode_index.push_back(static_cast<int32_t>(r));
    }
    if (!decode.tokens.empty()) {
      ASSIGN_OR_RETURN(ForwardOutput out, model_->Forward(decode, cache));
      if (!out.logits.empty()) {
        for (int32_t& r : out.logit_rows) r = decode_index[r];
        ASSIGN_OR_RETURN(const std::vector<float> got, reduction.reduce(g, batch, out));
        place(out.logit_rows, got);
      }
    }
    for (size_t r = 0; r < batch.logit_rows.size(); ++r) {
      const int32_t slot = batch.slots[batch.logit_rows[r]];
      if (!prompt_slots.count(slot)) continue;
      ASSIGN_OR_RETURN(const std::vector<float> got,
                       Prefill(g, batch, static_cast<int32_t>(r), slot, cache, reduction));
      place({static_cast<int32_t>(r)}, got);
    }
    words.insert(words.end(), part.begin(), part.end());
  }
  if (plan.pp_size > 1) {  // the last stage's words reach every stage
    RETURN_IF_ERROR(model_->parallel().pp->Broadcast(
        TensorView::Of(words.data(), DType::kF32, {static_cast<int64_t>(words.size())}),
        plan.pp_size - 1));
  }
  return words;
}

absl::StatusOr<std::vector<SequenceCounters>> HomerRunner::EndSequences(
    const std::vector<int32_t>& slots, KvCache& cache) {
  std::vector<SequenceCounters> out;
  for (int32_t slot : slots) {
    out.push_back(sequences_[slot].counters);
    sequences_.erase(slot);
  }
  return out;
}

}  // namespace tessera::homer
