// A wave: the requests the engine runs together on one model replica. The replica's leader
// (rank 0) takes them from the queue and sends them to the replica's other ranks; every rank
// then makes the same RunWave call, so the collectives inside match.
//
// Within a wave, prompts run batched: greedy max_tokens-1 requests and echo-only scoring in one
// ScoreTokens call (the generated token comes from the pass that scores the prompt), the other
// generations in one Generate call (continuous admission across the wave's prompts), then one
// ScoreTokens call for the log-probabilities of generated tokens.
#ifndef TESSERA_LAUNCHER_SERVE_REPLICA_WAVE_H_
#define TESSERA_LAUNCHER_SERVE_REPLICA_WAVE_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "launcher/model_bundle.h"
#include "launcher/serve/serve_job.h"
#include "runtime/generator.h"

namespace tessera::serve {

struct WaveSettings {
  GeneratorOptions generator;  // max_batch, max_seq_len, the method's runner
  bool method = false;         // a method runs the generation steps (no one-pass path)
};

// Called on the leader with (request index, new text) as text becomes final.
using WaveText = std::function<void(size_t, absl::string_view)>;

// Per request, one ChoiceResult per prompt.
absl::StatusOr<std::vector<std::vector<ChoiceResult>>> RunWave(
    ModelBundle& bundle, const std::vector<const CompletionRequest*>& requests,
    const WaveSettings& settings, const WaveText& on_text);

// The leader's message to the other ranks of its replica: a wave, an idle tick (sent while no
// request waits, so that a dead leader is noticed within the communicator's timeout) or stop.
enum class WaveKind { kWave, kIdle, kStop };
std::string EncodeWaveMessage(WaveKind kind, const std::vector<const CompletionRequest*>& requests);
absl::Status DecodeWaveMessage(const std::string& message, WaveKind* kind,
                               std::vector<CompletionRequest>* requests);

}  // namespace tessera::serve

#endif  // TESSERA_LAUNCHER_SERVE_REPLICA_WAVE_H_
