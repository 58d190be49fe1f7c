// Fuzzes the run-config text format and field overrides: the input is a .textproto file read by
// LoadRunConfig, then any number of NUL-separated "path=value" assignments applied with SetField,
// then ValidateRunConfig and RunConfigText. A config that validates holds only numbers its users
// can take (finite sampling settings, passkey depths in [0, 1], sandbox timeouts that
// convert to integers), and its printed text parses back.
#include <cmath>
#include <cstdlib>

#include "launcher/eval/run_config.h"
#include "launcher/text_proto.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace fuzz = tessera::fuzz;
  const std::vector<std::string> parts = fuzz::SplitAtNul(fuzz::AsText(data, size), 16);
  const std::string path = fuzz::WriteScratchFile("run.textproto", parts[0]);
  auto config = tessera::LoadRunConfig(path);
  if (!config.ok()) return 0;
  for (size_t i = 1; i < parts.size(); ++i) {
    if (!tessera::SetField(&*config, parts[i]).ok()) return 0;
  }
  const tessera::config::RunConfig& c = *config;
  if (tessera::ValidateRunSettings(c).ok()) {
    if (!std::isfinite(c.sampling().temperature()) || !std::isfinite(c.sampling().top_p())) {
      std::abort();
    }
  }
  if (tessera::ValidateRunConfig(c).ok()) {
    for (float d : c.task().passkey().depths()) {
      if (!(d >= 0 && d <= 1)) std::abort();
    }
    // The sandbox converts it to integer seconds; out-of-range conversions are undefined.
    if (!(c.task().code_generation().timeout_s() <= 86400)) std::abort();
  }
  const std::string text = tessera::RunConfigText(*config);
  tessera::config::RunConfig again;
  if (!tessera::ParseTextProto(text, "printed", {}, &again).ok()) std::abort();
  return 0;
}
