#include "methods/homer/bias_table.h"

#include <cmath>
#include <cstring>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "nlohmann/json.hpp"
#include "runtime/file_io.h"
#include "runtime/safetensors.h"

namespace tessera::homer {
namespace {

using nlohmann::json;
constexpr char kFormat[] = "tessera.homer_bias";
constexpr char kVersion[] = "1";

absl::Status Corrupt(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

}  // namespace

absl::Status WriteBiasTable(const std::string& path, const BiasTable& t) {
  if (t.layers < 1 || t.distances < 1 ||
      t.values.size() != static_cast<size_t>(t.layers * t.distances)) {
    return absl::InvalidArgumentError("WriteBiasTable: values must be [layers, distances]");
  }
  const size_t bytes = t.values.size() * sizeof(float);
  json header = json::object();
  header["bias"] = {{"dtype", "F32"},
                    {"shape", {t.layers, t.distances}},
                    {"data_offsets", {0, bytes}}};
  json meta = {{"format", kFormat},
               {"version", kVersion},
               {"layers", std::to_string(t.layers)},
               {"distances", std::to_string(t.distances)},
               {"samples", std::to_string(t.samples)}};
  for (const auto& [key, value] : t.provenance) meta[key] = value;
  header["__metadata__"] = meta;
  std::string text = header.dump();
  while (text.size() % 8 != 0) text += ' ';
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  char prefix[8];
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<char>((text.size() >> (8 * i)) & 0xff);
  out.write(prefix, 8);
  out << text;
  out.write(reinterpret_cast<const char*>(t.values.data()), static_cast<std::streamsize>(bytes));
  out.close();
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::StatusOr<BiasTable> ReadBiasTable(const std::string& path) {
  RETURN_IF_ERROR(CheckIsFile(path, "HOMER bias table (method.homer.bias_path)"));
  ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(path));  // validates offsets and dtypes
  ASSIGN_OR_RETURN(const std::string raw, ReadWholeFile(path, "HOMER bias table"));
  uint64_t length = 0;
  for (int i = 0; i < 8; ++i) {
    length |= static_cast<uint64_t>(static_cast<uint8_t>(raw[i])) << (8 * i);
  }
  const json header = json::parse(raw.substr(8, length), nullptr, false);
  const json meta = header.is_object() ? header.value("__metadata__", json()) : json();
  if (!meta.is_object() || meta.value("format", "") != kFormat) {
    return Corrupt(path, absl::StrCat("is not a HOMER bias table (__metadata__ format is not \"",
                                      kFormat, "\"); write one with `tessera calibrate --homer`"));
  }
  if (meta.value("version", "") != kVersion) {
    return Corrupt(path, absl::StrCat("has version ", meta.value("version", "?"),
                                      "; this Tessera reads version ", kVersion));
  }
  BiasTable t;
  if (!absl::SimpleAtoi(meta.value("layers", ""), &t.layers) ||
      !absl::SimpleAtoi(meta.value("distances", ""), &t.distances) || t.layers < 1 ||
      t.distances < 1) {
    return Corrupt(path, "__metadata__ needs layers >= 1 and distances >= 1");
  }
  if (!absl::SimpleAtoi(meta.value("samples", "0"), &t.samples)) t.samples = 0;
  for (const auto& [key, value] : meta.items()) {
    if (key != "format" && key != "version" && key != "layers" && key != "distances" &&
        key != "samples" && value.is_string()) {
      t.provenance[key] = value.get<std::string>();
    }
  }
  auto it = file->tensors().find("bias");
  if (it == file->tensors().end()) return Corrupt(path, "has no tensor \"bias\"");
  const TensorEntry& e = it->second;
  if (e.dtype != DType::kF32 || e.shape != std::vector<int64_t>{t.layers, t.distances}) {
    return Corrupt(path, absl::StrCat("tensor \"bias\" must be F32 [", t.layers, ", ",
                                      t.distances, "] as its __metadata__ says"));
  }
  t.values.resize(t.layers * t.distances);
  std::memcpy(t.values.data(), e.data, t.values.size() * sizeof(float));
  for (size_t i = 0; i < t.values.size(); ++i) {
    if (!std::isfinite(t.values[i])) {
      return Corrupt(path, absl::StrCat("bias[", i / t.distances, "][", i % t.distances,
                                        "] is not finite"));
    }
  }
  return t;
}

absl::Status CheckBiasFits(const BiasTable& t, const std::string& path, int64_t layers,
                           int64_t max_chunk_len) {
  if (t.layers != layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": the bias table has ", t.layers, " layers but the model has ", layers,
        "; calibrate one for this model (tessera calibrate --homer)"));
  }
  if (t.distances < max_chunk_len) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": the bias table covers distances 0..", t.distances - 1,
        " but method.homer.max_chunk_len ", max_chunk_len, " needs 0..", max_chunk_len - 1,
        "; calibrate with --max-seq-len ", max_chunk_len, " or lower max_chunk_len"));
  }
  return absl::OkStatus();
}

}  // namespace tessera::homer
