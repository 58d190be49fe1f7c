#include "runtime/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "nlohmann/json.hpp"
#include "runtime/file_io.h"

namespace tessera {
namespace {

using nlohmann::json;

// A header larger than this is not a safetensors header (the Rust reference caps it at 100 MB).
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;
// More elements than any checkpoint holds; products of dimensions below it fit int64 with room.
constexpr uint64_t kMaxElements = 1ull << 50;

absl::Status Corrupt(const std::string& path, absl::string_view what) {
  return absl::DataLossError(absl::StrCat(path, ": ", what));
}

absl::StatusOr<TensorEntry> ParseEntry(const std::string& path, const std::string& name,
                                       const json& e, const char* data, uint64_t data_bytes) {
  auto bad = [&](absl::string_view what) {
    return Corrupt(path, absl::StrCat("tensor \"", name, "\": ", what));
  };
  if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") ||
      !e.contains("data_offsets")) {
    return bad("header entry needs dtype, shape and data_offsets");
  }
  if (!e["dtype"].is_string()) return bad("dtype is not a string");
  auto dtype = ParseDType(e["dtype"].get<std::string>());
  if (!dtype.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": tensor \"", name, "\": ", dtype.status().message()));
  }
  TensorEntry t;
  t.dtype = *dtype;
  t.file = path;
  if (!e["shape"].is_array() || e["shape"].size() > TensorView::kMaxRank) {
    return bad("shape must be a list of at most 4 dimensions");
  }
  // The product of the non-zero dimensions is bounded too, not only the element count: a tensor
  // with a zero dimension has no elements, but the kernels multiply its other dimensions (row
  // sizes), which must neither overflow int64 nor turn negative.
  uint64_t numel = 1, nonzero_product = 1;
  for (const json& d : e["shape"]) {
    if (!d.is_number_unsigned()) return bad("shape holds a non-integer or negative dimension");
    const uint64_t v = d.get<uint64_t>();
    if (v != 0 && nonzero_product > kMaxElements / v) {
      return bad(absl::StrCat("shape ", e["shape"].dump(), " is impossibly large (more than 2^50 ",
                              "elements, counting only its non-zero dimensions)"));
    }
    if (v != 0) nonzero_product *= v;
    numel *= v;
    t.shape.push_back(static_cast<int64_t>(v));
  }
  const json& off = e["data_offsets"];
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
      !off[1].is_number_unsigned()) {
    return bad("data_offsets must be two non-negative integers");
  }
  uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
  if (begin > end || end > data_bytes) {
    return bad(absl::StrCat("data_offsets [", begin, ", ", end, "] fall outside the ", data_bytes,
                            " data bytes of the file (truncated or corrupt file?)"));
  }
  if (end - begin != numel * DTypeSize(t.dtype)) {
    return bad(absl::StrCat("data_offsets span ", end - begin, " bytes but shape and dtype need ",
                            numel * DTypeSize(t.dtype)));
  }
  t.data = data + begin;
  t.bytes = end - begin;
  return t;
}

// The JSON header; a key given twice in one object (a tensor name, or a field of an entry) is
// refused, as the reference implementation refuses it, instead of one of them silently winning.
absl::StatusOr<json> ParseHeader(const std::string& path, const char* begin, uint64_t bytes) {
  std::vector<std::set<std::string>> keys;  // per open object
  std::string duplicate;
  json::parser_callback_t track = [&](int /*depth*/, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) {
      keys.emplace_back();
    } else if (event == json::parse_event_t::object_end) {
      if (!keys.empty()) keys.pop_back();
    } else if (event == json::parse_event_t::key && !keys.empty() && parsed.is_string()) {
      if (!keys.back().insert(parsed.get<std::string>()).second && duplicate.empty()) {
        duplicate = parsed.get<std::string>();
      }
    }
    return true;
  };
  json header = json::parse(begin, begin + bytes, track, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return Corrupt(path, "header is not a valid JSON object");
  }
  if (!duplicate.empty()) {
    return Corrupt(path, absl::StrCat("header names \"", duplicate,
                                      "\" twice; each tensor (and each field) must appear once"));
  }
  return header;
}

// __metadata__: null or a map of strings to strings.
absl::Status CheckMetadata(const std::string& path, const json& metadata) {
  if (metadata.is_null()) return absl::OkStatus();
  if (!metadata.is_object()) {
    return Corrupt(path, "__metadata__ must be a map of strings to strings");
  }
  for (const auto& [key, value] : metadata.items()) {
    if (!value.is_string()) {
      return Corrupt(path, absl::StrCat("__metadata__[\"", key, "\"] must be a string, got ",
                                        value.dump().substr(0, 40)));
    }
  }
  return absl::OkStatus();
}

// Sorted by offset, the tensors must tile the data section exactly: each begins where the
// previous one ends (no overlap, no gap) and the last ends at the end of the file.
absl::Status CheckLayout(const std::string& path, const std::map<std::string, TensorEntry>& tensors,
                         const char* data, uint64_t data_bytes) {
  std::vector<std::pair<std::pair<uint64_t, uint64_t>, const std::string*>> spans;
  for (const auto& [name, t] : tensors) {
    const uint64_t begin = static_cast<uint64_t>(t.data - data);
    spans.push_back({{begin, begin + t.bytes}, &name});
  }
  std::sort(spans.begin(), spans.end());
  uint64_t at = 0;
  const std::string* previous = nullptr;
  for (const auto& [span, name] : spans) {
    if (span.first != at) {
      const std::string where =
          previous == nullptr ? std::string("the start of the data")
                              : absl::StrCat("the end of tensor \"", *previous, "\"");
      return Corrupt(path, absl::StrCat(
                               "tensor \"", *name, "\": data_offsets [", span.first, ", ",
                               span.second, "] ", span.first < at ? "overlap" : "leave a gap after",
                               " ", where, " (", at, "); tensors must be stored back to back"));
    }
    at = span.second;
    previous = name;
  }
  if (at != data_bytes) {
    return Corrupt(path, absl::StrCat("the tensors cover ", at, " of the ", data_bytes,
                                      " data bytes; the data section must hold exactly the "
                                      "tensors (truncated header or trailing bytes)"));
  }
  return absl::OkStatus();
}

}  // namespace

TensorView TensorEntry::view() const {
  TensorView v;
  v.data = const_cast<char*>(data);
  v.dtype = dtype;
  v.rank = static_cast<int>(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) v.shape[i] = shape[i];
  return v;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return absl::InternalError(absl::StrCat("cannot stat ", path));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(
        path, S_ISDIR(st.st_mode) ? " is a directory" : " is not a regular file",
        "; expected a safetensors file"));
  }
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->size_ = static_cast<size_t>(st.st_size);
  if (file->size_ < 8) {
    ::close(fd);
    return Corrupt(path, absl::StrCat("file is ", file->size_,
                                      " bytes, too short for a safetensors header"));
  }
  file->map_ = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (file->map_ == MAP_FAILED) {
    file->map_ = nullptr;
    return absl::InternalError(absl::StrCat("cannot mmap ", path, ": ", std::strerror(errno)));
  }
  const char* base = static_cast<const char*>(file->map_);
  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, base, 8);  // little-endian on every supported host
  if (header_bytes > kMaxHeaderBytes || header_bytes > file->size_ - 8) {
    return Corrupt(path, absl::StrCat("header length ", header_bytes, " exceeds the file (",
                                      file->size_, " bytes): truncated or not a safetensors file"));
  }
  ASSIGN_OR_RETURN(json header, ParseHeader(path, base + 8, header_bytes));
  const char* data = base + 8 + header_bytes;
  const uint64_t data_bytes = file->size_ - 8 - header_bytes;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      RETURN_IF_ERROR(CheckMetadata(path, entry));
      continue;
    }
    ASSIGN_OR_RETURN(TensorEntry t, ParseEntry(path, name, entry, data, data_bytes));
    file->tensors_.emplace(name, std::move(t));
  }
  RETURN_IF_ERROR(CheckLayout(path, file->tensors_, data, data_bytes));
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, size_);
}

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& model_dir) {
  namespace fs = std::filesystem;
  auto ckpt = std::make_unique<Checkpoint>();
  ckpt->dir_ = model_dir;
  const fs::path dir(model_dir);
  const fs::path index_path = dir / "model.safetensors.index.json";
  std::error_code ec;
  if (fs::exists(dir / "model.safetensors", ec)) {
    ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open((dir / "model.safetensors").string()));
    for (const auto& [name, entry] : file->tensors()) ckpt->file_of_[name] = "model.safetensors";
    ckpt->files_["model.safetensors"] = std::move(file);
    return ckpt;
  }
  if (!fs::exists(index_path, ec)) {
    if (fs::exists(dir / "pytorch_model.bin", ec) ||
        fs::exists(dir / "pytorch_model.bin.index.json", ec)) {
      return absl::InvalidArgumentError(absl::StrCat(
          model_dir, " holds PyTorch .bin weights only; convert them to safetensors "
                     "(transformers: model.save_pretrained(dir, safe_serialization=True))"));
    }
    return absl::NotFoundError(absl::StrCat(
        model_dir, " has neither model.safetensors nor model.safetensors.index.json"));
  }
  const std::string index_file = index_path.string();
  ASSIGN_OR_RETURN(std::string index_text, ReadWholeFile(index_file));
  json index = json::parse(index_text, nullptr, false);
  if (index.is_discarded() || !index.is_object() || !index.contains("weight_map") ||
      !index["weight_map"].is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_file, ": expected a JSON object with a \"weight_map\""));
  }
  if (index["weight_map"].empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_file, ": \"weight_map\" is empty; it must name every tensor's shard"));
  }
  std::set<std::string> shards;
  for (const auto& [name, file] : index["weight_map"].items()) {
    if (!file.is_string() || file.get<std::string>().empty() ||
        file.get<std::string>().find('/') != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          index_file, ": weight_map[\"", name, "\"] must be the name of a file in ", model_dir,
          ", got ", file.dump().substr(0, 60)));
    }
    ckpt->file_of_[name] = file.get<std::string>();
    shards.insert(file.get<std::string>());
  }
  // Every shard the index names must be there, although it is opened only when needed: a
  // checkpoint with a shard missing is broken on every rank, not only on the ranks that use it.
  for (const std::string& shard : shards) {
    if (absl::Status s = CheckIsFile((dir / shard).string()); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat(s.message(), " (named by ", index_file, ")"));
    }
  }
  return ckpt;
}

absl::StatusOr<const TensorEntry*> Checkpoint::Find(const std::string& name) {
  auto where = file_of_.find(name);
  if (where == file_of_.end()) {
    return absl::NotFoundError(
        absl::StrCat("tensor \"", name, "\" is missing from the checkpoint in ", dir_));
  }
  auto file = files_.find(where->second);
  if (file == files_.end()) {
    const std::string path = (std::filesystem::path(dir_) / where->second).string();
    auto opened = SafetensorsFile::Open(path);
    if (!opened.ok()) {
      return absl::Status(opened.status().code(),
                          absl::StrCat(opened.status().message(), " (shard holding \"", name, "\")"));
    }
    // Every tensor of the shard must be one the index assigns to it: a tensor stored in two
    // shards is ambiguous.
    for (const auto& [other, entry] : (*opened)->tensors()) {
      auto assigned = file_of_.find(other);
      if (assigned != file_of_.end() && assigned->second != where->second) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor \"", other, "\" is stored in both ", assigned->second, " and ", where->second,
            " of ", dir_, "; model.safetensors.index.json names ", assigned->second));
      }
    }
    file = files_.emplace(where->second, std::move(opened).value()).first;
  }
  auto entry = file->second->tensors().find(name);
  if (entry == file->second->tensors().end()) {
    return absl::NotFoundError(absl::StrCat("tensor \"", name, "\" is not in ",
                                            file->second->path(),
                                            " although model.safetensors.index.json says it is"));
  }
  return &entry->second;
}

}  // namespace tessera
