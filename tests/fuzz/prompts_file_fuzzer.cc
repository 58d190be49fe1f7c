// Fuzzes ReadPromptsFile (generate --prompts FILE): the input is the JSONL file. Prompts that are
// accepted must carry sampling settings the sampler accepts.
#include <cstdlib>

#include "launcher/prompts_file.h"
#include "runtime/sampler.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path =
      tessera::fuzz::WriteScratchFile("prompts.jsonl", tessera::fuzz::AsText(data, size));
  tessera::GenerationRequest defaults;
  defaults.max_new_tokens = 16;
  auto specs = tessera::ReadPromptsFile(path, defaults);
  if (!specs.ok()) return 0;
  for (const tessera::PromptSpec& spec : *specs) {
    if (spec.line < 1 || spec.request.max_new_tokens < 1) std::abort();
    if (!tessera::ValidateSamplingParams(spec.request.sampling).ok()) std::abort();
    (void)spec.id.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  return 0;
}
