#include "runtime/sentencepiece_adapter.h"

#include <sentencepiece_processor.h>

#include <exception>

namespace tessera::internal {

struct SentencePieceAdapter::Impl {
  sentencepiece::SentencePieceProcessor sp;
};

SentencePieceAdapter::SentencePieceAdapter() : impl_(std::make_unique<Impl>()) {}
SentencePieceAdapter::~SentencePieceAdapter() = default;

std::string SentencePieceAdapter::Load(const std::string& path) {
  // libsentencepiece reads with iostreams, which report some read errors by throwing; none may
  // leave this module.
  try {
    const auto status = impl_->sp.Load(path);
    return status.ok() ? std::string() : status.ToString();
  } catch (const std::exception& e) {
    return std::string("cannot read the file: ") + e.what();
  }
}

std::string SentencePieceAdapter::Encode(const std::string& text, std::vector<int>* ids) const {
  const auto status = impl_->sp.Encode(text, ids);
  return status.ok() ? std::string() : status.ToString();
}

std::string SentencePieceAdapter::Decode(const std::vector<int>& ids, std::string* text) const {
  const auto status = impl_->sp.Decode(ids, text);
  return status.ok() ? std::string() : status.ToString();
}

int SentencePieceAdapter::PieceSize() const { return impl_->sp.GetPieceSize(); }

}  // namespace tessera::internal
