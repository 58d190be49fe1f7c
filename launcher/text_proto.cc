#include "launcher/text_proto.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/text_format.h"
#include "kernels/status_macros.h"
#include "runtime/file_io.h"

namespace tessera {
namespace {

namespace pb = google::protobuf;

// Keeps the first text-format error with its position.
class FirstError : public pb::io::ErrorCollector {
 public:
  explicit FirstError(std::string source) : source_(std::move(source)) {}
  void AddError(int line, pb::io::ColumnNumber column, const std::string& message) override {
    if (first_.empty())
      first_ = absl::StrCat(source_, ":", line + 1, ":", column + 1, ": ", message);
  }
  const std::string& first() const { return first_; }

 private:
  std::string source_;
  std::string first_;
};

// protobuf 3.21's TextFormat::Parser skips a field named in `reserved "..."` without an error, so
// this walks the tokens of text that already parsed, following field names into sub-messages,
// and reports the first reserved name used as a field. A field name is an identifier followed
// by ':', '{' or '<' (enum values and other identifiers are followed by something else).
absl::Status CheckNoReservedFields(const std::string& text, const std::string& source,
                                   const RemovedFieldHints& hints, const pb::Descriptor* root) {
  pb::io::ArrayInputStream input(text.data(), static_cast<int>(text.size()));
  FirstError ignored(source);  // the text parsed already, so the tokens are well formed
  pb::io::Tokenizer tokens(&input, &ignored);
  tokens.set_comment_style(pb::io::Tokenizer::SH_COMMENT_STYLE);
  struct Level {
    const pb::Descriptor* type;     // nullptr: not a known message (unknown field, map, ...)
    const pb::Descriptor* pending;  // message type of the last field named at this level
  };
  std::vector<Level> levels = {{root, nullptr}};
  tokens.Next();
  while (tokens.current().type != pb::io::Tokenizer::TYPE_END) {
    const pb::io::Tokenizer::Token token = tokens.current();
    tokens.Next();
    const pb::io::Tokenizer::Token& next = tokens.current();
    if (token.type == pb::io::Tokenizer::TYPE_SYMBOL) {
      if (token.text == "{" || token.text == "<") {
        levels.push_back({levels.back().pending, nullptr});
      } else if ((token.text == "}" || token.text == ">") && levels.size() > 1) {
        levels.pop_back();
      }
      continue;
    }
    if (token.type != pb::io::Tokenizer::TYPE_IDENTIFIER ||
        next.type != pb::io::Tokenizer::TYPE_SYMBOL ||
        (next.text != ":" && next.text != "{" && next.text != "<")) {
      continue;
    }
    Level& level = levels.back();
    if (level.type == nullptr) continue;
    if (level.type->IsReservedName(token.text)) {
      std::string message =
          absl::StrCat(source, ":", token.line + 1, ":", token.column + 1, ": \"", token.text,
                       "\" is no longer a field of ", level.type->full_name(),
                       " (it was removed and would be ignored); delete it");
      const auto hint = hints.find(absl::StrCat(level.type->full_name(), ".", token.text));
      if (hint != hints.end()) absl::StrAppend(&message, ": ", hint->second);
      return absl::InvalidArgumentError(message);
    }
    const pb::FieldDescriptor* field = level.type->FindFieldByName(token.text);
    level.pending = field != nullptr ? field->message_type() : nullptr;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ParseTextProto(const std::string& text, const std::string& source,
                            const RemovedFieldHints& hints, pb::Message* message) {
  message->Clear();
  pb::TextFormat::Parser parser;
  FirstError errors(source);
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, message)) {
    return absl::InvalidArgumentError(errors.first().empty() ? source + ": cannot parse"
                                                             : errors.first());
  }
  return CheckNoReservedFields(text, source, hints, message->GetDescriptor());
}

absl::Status ParseTextProtoFile(const std::string& path, const std::string& flag,
                                const RemovedFieldHints& hints, pb::Message* message) {
  ASSIGN_OR_RETURN(const std::string text, ReadWholeFile(path, flag));
  return ParseTextProto(text, path, hints, message);
}

}  // namespace tessera
