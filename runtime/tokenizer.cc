#include "runtime/tokenizer.h"

#include "absl/strings/str_cat.h"
#include "runtime/file_io.h"
#include "runtime/sentencepiece_adapter.h"
#include "runtime/utf8.h"

namespace tessera {

Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& path) {
  // SentencePiece reads through an ifstream, which throws on a directory.
  if (absl::Status s = CheckIsFile(path, "tokenizer"); !s.ok()) return s;
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  t->sp_ = std::make_unique<internal::SentencePieceAdapter>();
  const std::string error = t->sp_->Load(path);
  if (!error.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot load SentencePiece model ", path, ": ", error));
  }
  return t;
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(absl::string_view text) const {
  const size_t bad = FindInvalidUtf8(text);
  if (bad != text.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("text is not valid UTF-8 (invalid byte 0x",
                     absl::Hex(static_cast<uint8_t>(text[bad]), absl::kZeroPad2), " at offset ",
                     bad, ")"));
  }
  std::vector<int> ids;
  const std::string error = sp_->Encode(std::string(text), &ids);
  if (!error.empty()) return absl::InternalError(absl::StrCat("tokenizer: ", error));
  return std::vector<int32_t>(ids.begin(), ids.end());
}

std::string Tokenizer::Decode(absl::Span<const int32_t> ids) const {
  std::vector<int> valid;
  valid.reserve(ids.size());
  for (int32_t id : ids) {
    if (id >= 0 && id < sp_->PieceSize()) valid.push_back(id);
  }
  std::string text;
  sp_->Decode(valid, &text);  // ids are in range, so decoding cannot fail
  return text;
}

std::string Tokenizer::DecodeAfter(absl::Span<const int32_t> context,
                                   absl::Span<const int32_t> ids) const {
  std::vector<int32_t> all(context.begin(), context.end());
  all.insert(all.end(), ids.begin(), ids.end());
  const std::string prefix = Decode(context);
  const std::string full = Decode(all);
  if (full.compare(0, prefix.size(), prefix) == 0) return full.substr(prefix.size());
  return Decode(ids);
}

int Tokenizer::vocab_size() const { return sp_->PieceSize(); }

}  // namespace tessera
