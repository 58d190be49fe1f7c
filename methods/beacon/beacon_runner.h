// BeaconRunner: generation and scoring with Activation Beacon (shared/specs/beacon.md §4). Each
// request's tokens are streamed through the model window by window (beacon_windows.h): a step's
// rows of one slot become one forward pass per window (a long prompt: many passes, which a
// pipeline runs as a wavefront, since every stage keeps its own layers' memory), all slots'
// j-th windows sharing pass j. Beacon rows are extension tokens (ModelOptions::extension: their
// own embedding and q/k/v/o projections), see only what the mask allows (RowKeys), store their
// keys at their memory positions (ForwardBatch::key_positions), and never have logits; after a
// condensation the slot keeps its memory and the new beacons (KvCache::Compact). The generator's
// positions are not used: positions are the stream's compressed coordinates.
//
// Per sequence counters: beacon_ratio, beacon_windows, beacon_rows, beacon_memory_entries,
// beacon_raw_entries (the slot's memory and raw entries at the end, on every layer and rank).
#ifndef TESSERA_METHODS_BEACON_BEACON_RUNNER_H_
#define TESSERA_METHODS_BEACON_BEACON_RUNNER_H_

#include <map>
#include <vector>

#include "absl/status/statusor.h"
#include "methods/beacon/beacon_config.h"
#include "methods/beacon/beacon_windows.h"
#include "runtime/forward_hooks.h"
#include "runtime/llama_model.h"
#include "runtime/step_engine.h"

namespace tessera::beacon {

// The hooks of one pass: the beacon rows' visibility in every layer, and the compaction of the
// condensed slots after the pass.
class BeaconPassHooks : public AttentionPolicy, public KvPolicy {
 public:
  struct Condensed {
    int32_t slot;
    std::vector<int32_t> keep;
  };
  RowKeys row_keys;
  std::vector<Condensed> condensed;

  const RowKeys* KeyVisibility(const LayerContext& ctx) override { return &row_keys; }
  absl::Status AfterStep(const ForwardBatch& batch, KvCache& cache) override;
  ForwardHooks hooks() { return ForwardHooks{nullptr, this, nullptr, this}; }
};

class BeaconRunner : public StepRunner {
 public:
  // `model` must outlive the runner; it must have been loaded with BeaconModelOptions.
  BeaconRunner(LlamaModel* model, BeaconConfig config, int64_t position_limit);

  absl::Status StartSequence(int32_t slot, uint64_t request_id) override;
  absl::StatusOr<std::vector<float>> Run(const std::vector<ForwardBatch>& micro_batches,
                                         KvCache& cache, const StepReduction& reduction) override;
  // An upper bound of the slot's entries while its prompt is fed and for every generated token
  // after it (at most one more each): the memory after the prompt, a full window and its beacons.
  int64_t PromptEntries(int64_t prompt_tokens) const override;
  absl::StatusOr<std::vector<SequenceCounters>> EndSequences(const std::vector<int32_t>& slots,
                                                             KvCache& cache) override;
  bool StreamsLongInputs() const override { return true; }

  // The stream of `slot` (for tests and counters).
  const StreamState& stream(int32_t slot) { return streams_[slot]; }

 private:
  // One caller micro-batch: its rows regrouped into window passes; the words of its logit rows.
  absl::StatusOr<std::vector<float>> RunMicroBatch(size_t index, const ForwardBatch& batch,
                                                   KvCache& cache, const StepReduction& reduction);

  LlamaModel* model_;
  BeaconConfig config_;
  int64_t position_limit_;
  std::map<int32_t, StreamState> streams_;
  BeaconPassHooks pass_;
};

}  // namespace tessera::beacon

#endif  // TESSERA_METHODS_BEACON_BEACON_RUNNER_H_
