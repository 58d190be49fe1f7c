// A wave: the requests the engine runs together on one model replica. The replica's leader
// (rank 0) takes them from the queue and sends them to the replica's other ranks; every rank
// then makes the same RunWave call, so the collectives inside match.
//
// Within a wave, prompts run batched: greedy max_tokens-1 requests and echo-only scoring in one
// ScoreTokens call (the generated token comes from the pass that scores the prompt), the other
// generations in one Generate call (continuous admission across the wave's prompts, and of new
// requests from the queue while it runs, WaveFeed), then one ScoreTokens call for the
// log-probabilities of generated tokens.
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

// True for the requests the wave's generation step runs (not scored in one pass, max_tokens >
// 0): the ones that can join a wave while it generates.
bool RunsGeneration(const CompletionRequest& r, const WaveSettings& settings);

// Requests that join the wave while it generates (continuous admission), and early answers.
struct WaveFeed {
  // Before every generation step, on every rank: up to `free_slots` prompts' worth of requests
  // for which RunsGeneration holds, the same on every rank (the leader takes them from its
  // queue and sends them, the others receive them). They get the indices after the wave's own,
  // in order; the pointers must stay valid until RunWave returns.
  std::function<absl::StatusOr<std::vector<const CompletionRequest*>>(int32_t free_slots)> admit;
  // With request i's choices as soon as they are final (a generation without log-probabilities
  // that ended); once per request at most; may be empty. RunWave still returns every request.
  std::function<void(size_t, const std::vector<ChoiceResult>&)> done;
};

// Per request (the wave's own, then the admitted ones), one ChoiceResult per prompt.
// `feed` (not owned) may be null.
absl::StatusOr<std::vector<std::vector<ChoiceResult>>> RunWave(
    ModelBundle& bundle, const std::vector<const CompletionRequest*>& requests,
    const WaveSettings& settings, const WaveText& on_text, const WaveFeed* feed = nullptr);

// The leader's message to the other ranks of its replica: a wave, the requests admitted into
// the running wave before one of its steps (possibly none), an idle tick (sent while no request
// waits, so that a dead leader is noticed within the communicator's timeout) or stop.
enum class WaveKind { kWave, kAdmit, kIdle, kStop };
std::string EncodeWaveMessage(WaveKind kind, const std::vector<const CompletionRequest*>& requests);
absl::Status DecodeWaveMessage(const std::string& message, WaveKind* kind,
                               std::vector<CompletionRequest>* requests);

}  // namespace tessera::serve

#endif  // TESSERA_LAUNCHER_SERVE_REPLICA_WAVE_H_
