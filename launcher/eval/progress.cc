#include "launcher/eval/progress.h"

#include <unistd.h>

#include <algorithm>

#include "absl/strings/str_format.h"

namespace tessera {

Progress::Progress(std::string label, int64_t total, int replicas, bool enabled,
                   std::chrono::seconds interval, FILE* out)
    : label_(std::move(label)), total_(total), replicas_(std::max(1, replicas)), enabled_(enabled),
      tty_(enabled && isatty(STDOUT_FILENO) && isatty(fileno(out))), interval_(interval), out_(out),
      start_(std::chrono::steady_clock::now()), last_line_(start_) {}

std::string Progress::FormatSeconds(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  return absl::StrFormat("%02d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
}

std::string Progress::Line(const std::string& label, int64_t done, int64_t total, double elapsed) {
  const double rate = elapsed > 0 ? done / elapsed : 0.0;
  const double pct = total > 0 ? 100.0 * done / total : 100.0;
  std::string eta = "--:--:--";
  if (rate > 0) eta = FormatSeconds((total - done) / rate);
  return absl::StrFormat("[eval] %s: %d/%d samples (%.0f%%) | %.2f samples/s | elapsed %s | ETA %s",
                         label, done, total, pct, rate, FormatSeconds(elapsed), eta);
}

void Progress::Advance(int64_t samples) {
  if (!enabled_) return;
  local_done_ += samples;
  const auto now = std::chrono::steady_clock::now();
  if (tty_) {
    Print(false);
  } else if (now - last_line_ >= interval_) {
    last_line_ = now;
    Print(false);
  }
}

void Progress::Finish() {
  if (!enabled_) return;
  local_done_ = total_ / replicas_ + 1;  // every replica is done
  Print(true);
}

void Progress::Print(bool final) {
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const int64_t done = std::min(total_, final ? total_ : local_done_ * replicas_);
  const std::string line = Line(label_, done, total_, elapsed);
  if (tty_) {
    const int width = 30;
    const int filled = total_ > 0 ? static_cast<int>(width * done / total_) : width;
    std::fprintf(out_, "\r[%s%s] %s", std::string(filled, '#').c_str(),
                 std::string(width - filled, '.').c_str(), line.c_str());
    if (final) std::fputc('\n', out_);
  } else {
    std::fprintf(out_, "%s\n", line.c_str());
  }
  std::fflush(out_);
}

}  // namespace tessera
