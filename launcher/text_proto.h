// Reading protobuf text-format files (.textproto) for the launcher's --config and --method.
//
//   config::RunConfig c;
//   RETURN_IF_ERROR(ParseTextProtoFile("configs/tasks/passkey.textproto", "--config", {}, &c));
//
// Errors name the file and the line: "run.textproto:3:5: Message type ... has no field named
// ...". protobuf's parser silently skips a field whose name the schema lists as `reserved` (a
// field that was removed); this one refuses it, so a removed setting is never ignored unseen.
#ifndef TESSERA_LAUNCHER_TEXT_PROTO_H_
#define TESSERA_LAUNCHER_TEXT_PROTO_H_

#include <map>
#include <string>

#include "absl/status/status.h"
#include "google/protobuf/message.h"

namespace tessera {

// What replaced a removed field, keyed by "<message full name>.<field name>", e.g.
// {"tessera.config.RunConfig.methods", "set methods in `method { ... }`"}; added to the error.
using RemovedFieldHints = std::map<std::string, std::string>;

// Parses the file at `path` into `message` (cleared first). `flag` names where the path came
// from ("--config") for the error when the file cannot be opened. Unknown fields, malformed
// values and reserved field names are InvalidArgument naming path:line:column.
absl::Status ParseTextProtoFile(const std::string& path, const std::string& flag,
                                const RemovedFieldHints& hints, google::protobuf::Message* message);

// The same for text already read; `source` names it in errors (a path, "<flag>").
absl::Status ParseTextProto(const std::string& text, const std::string& source,
                            const RemovedFieldHints& hints, google::protobuf::Message* message);

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_TEXT_PROTO_H_
