#include "methods/early_exit/exit_confidence.h"

#include <algorithm>
#include <cmath>

namespace tessera {

double ExitConfidence(const VocabRowStats& stats, config::EarlyExitSettings::Confidence measure,
                      int64_t vocab_size) {
  switch (measure) {
    case config::EarlyExitSettings::MAX_PROB:
      return stats.top1_prob();
    case config::EarlyExitSettings::ENTROPY:
      if (vocab_size < 2) return 1.0;
      return std::clamp(1.0 - stats.entropy / std::log(static_cast<double>(vocab_size)), 0.0, 1.0);
    default:
      return stats.top2_gap();
  }
}

}  // namespace tessera
