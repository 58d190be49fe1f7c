// Fuzzes the command-line handling that interprets user strings: the input is an argument list
// (NUL-separated) given to NormalizeFlagNames and TakeRepeatedFlag(--set), and every --set value
// is applied to a run config with SetField, as `tessera eval` does; then --stage-layers values
// are parsed.
#include <cstdlib>

#include "absl/flags/flag.h"
#include "absl/flags/marshalling.h"
#include "launcher/eval/run_config.h"
#include "launcher/flags.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace fuzz = tessera::fuzz;
  std::vector<std::string> args = fuzz::SplitAtNul(fuzz::AsText(data, size), 64);
  args = tessera::NormalizeFlagNames(args);
  const size_t before = args.size();
  const std::vector<std::string> sets = tessera::TakeRepeatedFlag(&args, "set");
  if (args.size() > before) std::abort();
  tessera::config::RunConfig c;
  for (const std::string& s : sets) {
    if (!tessera::SetField(&c, s).ok()) break;
  }
  (void)tessera::ValidateRunConfig(c).ok();
  // The values of a --stage-layers argument, as absl would store them.
  for (const std::string& a : args) {
    if (a.rfind("--stage_layers=", 0) != 0) continue;
    std::string error;
    std::vector<std::string> layers;
    if (absl::ParseFlag(a.substr(15), &layers, &error)) {
      absl::SetFlag(&FLAGS_stage_layers, layers);
      (void)tessera::StageLayersFromFlags().ok();
    }
  }
  return 0;
}
