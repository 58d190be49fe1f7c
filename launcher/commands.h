// The subcommands of the `tessera` binary. Each reads the parsed flags, runs, prints its output
// and returns a Status that main() turns into the exit code.
#ifndef TESSERA_LAUNCHER_COMMANDS_H_
#define TESSERA_LAUNCHER_COMMANDS_H_

#include "absl/status/status.h"

namespace tessera {

// `tessera generate`: --prompt streams the completion to stdout; --prompts FILE.jsonl writes one
// JSON line per prompt (text, token ids, finish reason, timings) in input order.
absl::Status RunGenerate();

// `tessera bench`: prefill tokens/s, decode ms/token, weight bytes, peak RSS and the memory
// bandwidth and sgemm rate of this machine measured in the same run, as one JSON object.
absl::Status RunBench();

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_COMMANDS_H_
