// Fuzzes the eval tasks' dataset readers (ReadJsonl and each task's record checks, tokenization
// included): the first input byte picks the task kind, the rest is its JSONL data file. The
// model is the llama2_mha fixture's config and tokenizer; tasks are built, never evaluated.
#include <cstdlib>
#include <memory>

#include "launcher/eval/eval_task.h"
#include "runtime/model_config.h"
#include "runtime/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

struct Model {
  tessera::ModelConfig config;
  std::unique_ptr<tessera::Tokenizer> tokenizer;
};

const Model& Fixture() {
  static const Model* model = [] {
    const std::string dir = std::string(TESSERA_SOURCE_DIR) + "/tests/fixtures/models/llama2_mha";
    auto config = tessera::LoadModelConfig(dir);
    auto tokenizer = tessera::Tokenizer::Load(dir + "/tokenizer.model");
    if (!config.ok() || !tokenizer.ok()) std::abort();
    return new Model{*config, std::move(tokenizer).value()};
  }();
  return *model;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const Model& model = Fixture();
  const std::string path =
      tessera::fuzz::WriteScratchFile("data.jsonl", tessera::fuzz::AsText(data + 1, size - 1));
  tessera::config::RunConfig c;
  c.set_max_batch(4);
  switch (data[0] % 5) {
    case 0:
      c.mutable_task()->mutable_perplexity()->set_data(path);
      c.mutable_task()->mutable_perplexity()->set_window(64);
      break;
    case 1:
      c.mutable_task()->mutable_passkey()->set_data(path);
      break;
    case 2:
      c.mutable_task()->mutable_multiple_choice()->set_data(path);
      break;
    case 3:
      c.mutable_task()->mutable_code_generation()->set_data(path);
      break;
    default:
      c.mutable_task()->mutable_generation()->set_data(path);
      break;
  }
  if (data[0] >= 128) c.mutable_task()->set_limit(1 + data[0] % 3);
  auto task = tessera::MakeEvalTask(c, model.config, *model.tokenizer);
  if (!task.ok()) return 0;
  if ((*task)->size() == 0 && data[0] < 128) std::abort();  // an empty dataset is refused
  (void)(*task)->Describe().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return 0;
}
