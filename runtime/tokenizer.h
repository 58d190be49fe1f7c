// Tokenizer: SentencePiece `tokenizer.model` (Llama-2, CodeLlama) through libsentencepiece.
//
// Encode() does not add BOS; the caller does (Llama prompts start with BOS).
// Ids at or beyond the SentencePiece vocabulary (a model vocab padded past the tokenizer's)
// decode to nothing.
#ifndef TESSERA_RUNTIME_TOKENIZER_H_
#define TESSERA_RUNTIME_TOKENIZER_H_

#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace tessera::internal {
class SentencePieceAdapter;
}

namespace tessera {

class Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& path);
  ~Tokenizer();

  // Fails with InvalidArgument on invalid UTF-8 (naming the byte offset).
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const;
  std::string Decode(absl::Span<const int32_t> ids) const;
  // The text `ids` adds after `context` ids (for streaming: a leading space of the first piece is
  // kept, which decoding `ids` alone would drop).
  std::string DecodeAfter(absl::Span<const int32_t> context, absl::Span<const int32_t> ids) const;
  int vocab_size() const;

 private:
  Tokenizer() = default;
  std::unique_ptr<internal::SentencePieceAdapter> sp_;
};

}  // namespace tessera

#endif  // TESSERA_RUNTIME_TOKENIZER_H_
