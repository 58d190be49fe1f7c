// A plain-C++ facade over libsentencepiece. sentencepiece_processor.h declares its own
// `absl::string_view`, which clashes with Abseil's, so it is included only in
// sentencepiece_adapter.cc, a translation unit that includes no Abseil header.
#ifndef TESSERA_RUNTIME_SENTENCEPIECE_ADAPTER_H_
#define TESSERA_RUNTIME_SENTENCEPIECE_ADAPTER_H_

#include <memory>
#include <string>
#include <vector>

namespace tessera::internal {

class SentencePieceAdapter {
 public:
  SentencePieceAdapter();
  ~SentencePieceAdapter();

  // Each returns an empty string on success, else the library's error message.
  std::string Load(const std::string& path);
  std::string Encode(const std::string& text, std::vector<int>* ids) const;
  std::string Decode(const std::vector<int>& ids, std::string* text) const;
  int PieceSize() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera::internal

#endif  // TESSERA_RUNTIME_SENTENCEPIECE_ADAPTER_H_
