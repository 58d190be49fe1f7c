// Fuzzes the Top-theta calibration files: the input is parsed as th.txt and as sdc.txt
// (ParseBins), a parsed th.txt is built into a dense table for a 4-layer, 4-head model
// (ThresholdTable::Build), and the input is also read as thresholds.safetensors. Malformed input
// must give an error, never a crash; a table that builds must answer every lookup with one of
// the file's values, and text read and formatted back must be the input's lines.
#include <cstdlib>
#include <set>

#include "methods/top_theta/threshold_safetensors.h"
#include "methods/top_theta/threshold_table.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace tt = tessera::top_theta;
  namespace fuzz = tessera::fuzz;
  const std::string text(fuzz::AsText(data, size));
  for (tt::BinFile kind : {tt::BinFile::kThresholds, tt::BinFile::kMissingMass}) {
    auto bins = tt::ParseBins(text, "th.txt", kind);
    if (!bins.ok()) continue;
    // Formatting back and parsing again gives the same bins.
    auto again = tt::ParseBins(tt::FormatBins(*bins, kind), "th.txt", kind);
    if (!again.ok() || again->size() != bins->size()) std::abort();
    if (kind != tt::BinFile::kThresholds || bins->empty()) continue;
    const std::vector<int32_t> k(4, (*bins)[0].k);
    auto table = tt::ThresholdTable::Build(*bins, "th.txt", kind, 4, k);
    if (!table.ok()) continue;
    std::set<float> values;
    for (const auto& b : *bins) values.insert(static_cast<float>(b.value));
    for (int64_t l = 0; l < 4; ++l) {
      for (int64_t h = 0; h < 4; ++h) {
        for (int64_t n : {int64_t{1}, int64_t{table->n_lo()}, int64_t{table->n_hi()},
                          int64_t{table->n_hi()} + 7}) {
          if (!values.count(table->At(l, h, n))) std::abort();
        }
      }
    }
  }
  const std::string path = fuzz::WriteScratchFile("thresholds.safetensors", text);
  (void)tt::ReadThresholdSafetensors(path);
  return 0;
}
