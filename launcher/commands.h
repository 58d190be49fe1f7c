// The subcommands of the `tessera` binary. Each reads the parsed flags, runs, prints its output
// and returns a Status that main() turns into the exit code.
#ifndef TESSERA_LAUNCHER_COMMANDS_H_
#define TESSERA_LAUNCHER_COMMANDS_H_

#include "absl/status/status.h"
#include "configs/method_settings.pb.h"
#include "launcher/job.h"

namespace tessera {

// `tessera generate`: --prompt streams the completion to stdout; --prompts FILE.jsonl writes one
// JSON line per prompt (text, token ids, finish reason, timings) in input order. Data-parallel
// replicas take every dp-th prompt; rank 0 streams and writes. `methods` (the run config's
// method section) run on every replica.
//
// Every command returns an error only after all ranks agreed on the outcome of the phase
// (CheckPhase), so that every rank exits non-zero and each cause is printed once (main() does
// not print a status marked by IsReportedElsewhere).
absl::Status RunGenerate(Job& job, const config::MethodSettings& methods);

// `tessera bench`: prefill tokens/s, decode ms/token, weight bytes, peak RSS and the memory
// bandwidth and sgemm rate of this machine measured in the same run, as one JSON object.
absl::Status RunBench(Job& job, const config::MethodSettings& methods);

// `tessera serve`: an OpenAI-compatible HTTP server (launcher/serve/) on --host / --port, run by
// rank 0; the replica's other ranks follow its waves of requests until SIGTERM / SIGINT.
absl::Status RunServe(Job& job, const config::MethodSettings& methods);

// `tessera calibrate`: Top-theta calibration (methods/top_theta/calibration_run.h) on --data
// for the method.sparse_attention settings; rank 0 writes th.txt / sdc.txt and calibration.json.
absl::Status RunCalibrate(Job& job, const config::MethodSettings& methods);

// `tessera plan`: per-rank weight bytes, KV bytes per token and KV capacity of a model (--model
// DIR or DIR/config.json; no weights are read) on --tp x --pp ranks of --device-memory each, as
// a table or (--json) one JSON object. Runs in one process, without MPI.
absl::Status RunPlan();

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_COMMANDS_H_
