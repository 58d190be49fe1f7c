#include "launcher/model_bundle.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace tessera {

absl::StatusOr<ModelBundle> LoadModelBundle(const std::string& dir, const std::string& backend_name,
                                            bool require_tokenizer,
                                            const ModelParallelism& parallel) {
  if (dir.empty()) return absl::InvalidArgumentError("--model is required (a model directory)");
  if (!std::filesystem::is_directory(dir)) {
    return absl::NotFoundError(absl::StrCat("--model: ", dir, " is not a directory"));
  }
  BackendKind kind;
  if (backend_name == "cpu") {
    kind = BackendKind::kCpu;
  } else if (backend_name == "cuda") {
    kind = BackendKind::kCuda;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--backend: \"", backend_name, "\" is not a backend; use cpu or cuda"));
  }
  ModelBundle b;
  ASSIGN_OR_RETURN(b.backend, MakeBackend(kind));
  ASSIGN_OR_RETURN(b.model, LlamaModel::Load(dir, b.backend.get(), parallel));
  const std::string sp_path = (std::filesystem::path(dir) / "tokenizer.model").string();
  if (std::filesystem::exists(sp_path)) {
    ASSIGN_OR_RETURN(b.tokenizer, Tokenizer::Load(sp_path));
    if (b.tokenizer->vocab_size() > b.model->config().vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          sp_path, " has ", b.tokenizer->vocab_size(), " pieces but config.json vocab_size is ",
          b.model->config().vocab_size));
    }
  } else if (require_tokenizer) {
    return absl::NotFoundError(absl::StrCat(sp_path, " is missing; text prompts need a "
                                                     "SentencePiece tokenizer.model"));
  }
  return b;
}

}  // namespace tessera
