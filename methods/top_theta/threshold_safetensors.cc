#include "methods/top_theta/threshold_safetensors.h"

#include <cstring>
#include <fstream>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "nlohmann/json.hpp"
#include "runtime/file_io.h"
#include "runtime/safetensors.h"

namespace tessera::top_theta {
namespace {

using nlohmann::json;
constexpr char kFormat[] = "tessera.top_theta";
constexpr char kVersion[] = "1";

struct Grid {
  int32_t n_lo = 1, n_hi = 1;
  int64_t width() const { return n_hi - n_lo + 1; }
};

Grid GridOf(const ThresholdArchive& a) {
  Grid g;
  bool first = true;
  for (const auto* bins : {&a.thresholds, &a.missing_mass}) {
    for (const CalibratedBin& b : *bins) {
      g.n_lo = first ? b.n : std::min(g.n_lo, b.n);
      g.n_hi = first ? b.n : std::max(g.n_hi, b.n);
      first = false;
    }
  }
  return g;
}

// Dense value and sample tensors of `bins` on the grid.
void Fill(const std::vector<CalibratedBin>& bins, const ThresholdArchive& a, const Grid& g,
          std::vector<float>* values, std::vector<int32_t>* samples) {
  const size_t size = static_cast<size_t>(a.layers * a.heads * g.width());
  values->assign(size, 0.0f);
  samples->assign(size, 0);
  for (const CalibratedBin& b : bins) {
    const size_t at =
        (static_cast<size_t>(b.layer) * a.heads + b.head) * g.width() + (b.n - g.n_lo);
    (*values)[at] = static_cast<float>(b.value);
    (*samples)[at] = static_cast<int32_t>(std::min<int64_t>(b.samples, INT32_MAX));
  }
}

absl::Status Corrupt(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

}  // namespace

absl::Status WriteThresholdSafetensors(const std::string& path, const ThresholdArchive& a) {
  const Grid g = GridOf(a);
  std::vector<std::pair<std::string, std::string>> blobs;  // name -> bytes
  json header = json::object();
  const std::vector<int64_t> shape = {a.layers, a.heads, g.width()};
  size_t offset = 0;
  auto add = [&](const std::string& name, const char* dtype, const void* data, size_t bytes) {
    header[name] = {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {offset, offset + bytes}}};
    blobs.emplace_back(name, std::string(static_cast<const char*>(data), bytes));
    offset += bytes;
  };
  std::vector<float> values;
  std::vector<int32_t> samples;
  Fill(a.thresholds, a, g, &values, &samples);
  add("theta", "F32", values.data(), values.size() * 4);
  add("samples", "I32", samples.data(), samples.size() * 4);
  std::vector<float> mass;
  std::vector<int32_t> mass_samples;
  if (!a.missing_mass.empty()) {
    Fill(a.missing_mass, a, g, &mass, &mass_samples);
    add("missing_mass", "F32", mass.data(), mass.size() * 4);
    add("mass_samples", "I32", mass_samples.data(), mass_samples.size() * 4);
  }
  header["__metadata__"] = {{"format", kFormat},
                            {"version", kVersion},
                            {"layers", std::to_string(a.layers)},
                            {"heads", std::to_string(a.heads)},
                            {"n_lo", std::to_string(g.n_lo)},
                            {"n_hi", std::to_string(g.n_hi)},
                            {"placement", a.placement},
                            {"layer_k", json(a.layer_k).dump()}};
  std::string text = header.dump();
  while (text.size() % 8 != 0) text += ' ';
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  uint64_t length = text.size();
  char prefix[8];
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  out.write(prefix, 8);
  out << text;
  for (const auto& [name, bytes] : blobs) out << bytes;
  out.close();
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::StatusOr<ThresholdArchive> ReadThresholdSafetensors(const std::string& path) {
  ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(path));  // validates offsets and dtypes
  ASSIGN_OR_RETURN(const std::string raw, ReadWholeFile(path, "threshold file"));
  uint64_t length = 0;
  for (int i = 0; i < 8; ++i)
    length |= static_cast<uint64_t>(static_cast<uint8_t>(raw[i])) << (8 * i);
  const json header = json::parse(raw.substr(8, length), nullptr, false);
  const json meta = header.is_object() ? header.value("__metadata__", json()) : json();
  if (!meta.is_object() || meta.value("format", "") != kFormat) {
    return Corrupt(path, absl::StrCat("is not a Top-theta threshold file (__metadata__ format is "
                                      "not \"",
                                      kFormat, "\")"));
  }
  if (meta.value("version", "") != kVersion) {
    return Corrupt(path, absl::StrCat("has version ", meta.value("version", "?"),
                                      "; this Tessera reads version ", kVersion));
  }
  ThresholdArchive a;
  Grid g;
  if (!absl::SimpleAtoi(meta.value("layers", ""), &a.layers) ||
      !absl::SimpleAtoi(meta.value("heads", ""), &a.heads) ||
      !absl::SimpleAtoi(meta.value("n_lo", ""), &g.n_lo) ||
      !absl::SimpleAtoi(meta.value("n_hi", ""), &g.n_hi) || a.layers < 1 || a.heads < 1 ||
      g.n_lo < 1 || g.n_hi < g.n_lo) {
    return Corrupt(path, "__metadata__ needs layers, heads, n_lo, n_hi (1 <= n_lo <= n_hi)");
  }
  a.placement = meta.value("placement", "");
  const json ks = json::parse(meta.value("layer_k", ""), nullptr, false);
  if (!ks.is_array() || static_cast<int64_t>(ks.size()) != a.layers) {
    return Corrupt(path, "__metadata__ layer_k must be a JSON list of one k per layer");
  }
  for (const json& k : ks) a.layer_k.push_back(k.is_number_integer() ? k.get<int32_t>() : -1);
  const std::vector<int64_t> shape = {a.layers, a.heads, g.width()};
  auto tensor = [&](const std::string& name, DType dtype) -> absl::StatusOr<const TensorEntry*> {
    auto it = file->tensors().find(name);
    if (it == file->tensors().end()) return Corrupt(path, absl::StrCat("has no tensor ", name));
    if (it->second.dtype != dtype || it->second.shape != shape) {
      return Corrupt(path, absl::StrCat(name, " must be ", DTypeName(dtype), " [", a.layers, ", ",
                                        a.heads, ", ", g.width(), "]"));
    }
    return &it->second;
  };
  auto bins_of = [&](const std::string& values, const std::string& counts, bool with_k,
                     std::vector<CalibratedBin>* out) -> absl::Status {
    ASSIGN_OR_RETURN(const TensorEntry* v, tensor(values, DType::kF32));
    ASSIGN_OR_RETURN(const TensorEntry* c, tensor(counts, DType::kI32));
    for (int64_t l = 0; l < a.layers; ++l) {
      for (int64_t h = 0; h < a.heads; ++h) {
        for (int64_t col = 0; col < g.width(); ++col) {
          const int64_t at = (l * a.heads + h) * g.width() + col;
          int32_t count;
          float value;
          std::memcpy(&count, c->data + at * 4, 4);
          std::memcpy(&value, v->data + at * 4, 4);
          if (count <= 0) continue;
          CalibratedBin b;
          b.layer = static_cast<int32_t>(l);
          b.head = static_cast<int32_t>(h);
          b.n = static_cast<int32_t>(g.n_lo + col);
          b.value = value;
          b.samples = count;
          b.k = with_k ? a.layer_k[l] : 0;
          out->push_back(b);
        }
      }
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(bins_of("theta", "samples", true, &a.thresholds));
  if (file->tensors().count("missing_mass")) {
    RETURN_IF_ERROR(bins_of("missing_mass", "mass_samples", false, &a.missing_mass));
  }
  return a;
}

}  // namespace tessera::top_theta
