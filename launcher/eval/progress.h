// Progress of an evaluation, printed by rank 0: plain lines with done/total, rate and ETA that
// read well in a Slurm log (one every `interval`), and a live bar redrawn in place when stdout
// (and the progress stream) is a terminal.
//
// Rank 0 counts the samples its own replica finished; with dp replicas working at the same pace
// the job has done about dp times as many, which is what the lines report (capped at the total).
#ifndef TESSERA_LAUNCHER_EVAL_PROGRESS_H_
#define TESSERA_LAUNCHER_EVAL_PROGRESS_H_

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace tessera {

class Progress {
 public:
  // `enabled` false makes every call a no-op (ranks other than 0).
  Progress(std::string label, int64_t total, int replicas, bool enabled,
           std::chrono::seconds interval = std::chrono::seconds(10), FILE* out = stderr);

  // `samples` more samples finished on this replica.
  void Advance(int64_t samples);
  // The final line (always printed when enabled).
  void Finish();

  // "00:01:05" style; exposed for tests.
  static std::string FormatSeconds(double seconds);
  // The plain progress line for `done` of `total` after `elapsed` seconds; exposed for tests.
  static std::string Line(const std::string& label, int64_t done, int64_t total, double elapsed);

 private:
  void Print(bool final);

  std::string label_;
  int64_t total_, local_done_ = 0;
  int replicas_;
  bool enabled_, tty_;
  std::chrono::seconds interval_;
  FILE* out_;
  std::chrono::steady_clock::time_point start_, last_line_;
};

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_EVAL_PROGRESS_H_
