#include "methods/top_theta/threshold_file.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <tuple>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "kernels/status_macros.h"
#include "runtime/file_io.h"

namespace tessera::top_theta {
namespace {

absl::string_view Layout(BinFile kind) {
  return kind == BinFile::kThresholds ? "L<layer>_H<head>:<n> <theta> <num_samples> <k>"
                                      : "L<layer>_H<head>:<n> <missing_mass> <num_samples>";
}

// "L3_H7:129" -> layer 3, head 7, n 129.
bool ParseKey(absl::string_view key, CalibratedBin* bin) {
  if (!absl::ConsumePrefix(&key, "L")) return false;
  const size_t under = key.find("_H"), colon = key.find(':');
  if (under == absl::string_view::npos || colon == absl::string_view::npos || colon < under) {
    return false;
  }
  return absl::SimpleAtoi(key.substr(0, under), &bin->layer) &&
         absl::SimpleAtoi(key.substr(under + 2, colon - under - 2), &bin->head) &&
         absl::SimpleAtoi(key.substr(colon + 1), &bin->n) && bin->layer >= 0 && bin->head >= 0 &&
         bin->n >= 1;
}

std::string ShortestText(double value) {
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

}  // namespace

absl::StatusOr<std::vector<CalibratedBin>> ParseBins(const std::string& text,
                                                     const std::string& path, BinFile kind) {
  const size_t fields = kind == BinFile::kThresholds ? 4 : 3;
  std::vector<CalibratedBin> bins;
  std::set<std::tuple<int32_t, int32_t, int32_t>> seen;
  std::map<int32_t, int32_t> layer_k;
  const std::vector<std::string> lines = SplitLines(text);
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string where = absl::StrCat(path, ":", i + 1);
    const absl::string_view line = absl::StripAsciiWhitespace(lines[i]);
    if (line.empty()) continue;
    const std::vector<absl::string_view> parts = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    CalibratedBin bin;
    if (parts.size() != fields || !ParseKey(parts[0], &bin) ||
        !absl::SimpleAtod(parts[1], &bin.value) || !absl::SimpleAtoi(parts[2], &bin.samples) ||
        (fields == 4 && !absl::SimpleAtoi(parts[3], &bin.k))) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": expected `", Layout(kind), "`, got `", line, "`"));
    }
    if (!std::isfinite(bin.value)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": the value ", parts[1], " is not finite"));
    }
    if (bin.samples < 1 || (fields == 4 && bin.k < 1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": num_samples", fields == 4 ? " and k" : "", " must be >= 1, got `", line, "`"));
    }
    if (!seen.insert({bin.layer, bin.head, bin.n}).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": bin ", parts[0], " appears twice; keep one line per bin"));
    }
    if (fields == 4) {
      auto [it, added] = layer_k.emplace(bin.layer, bin.k);
      if (!added && it->second != bin.k) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": layer ", bin.layer, " has k ", bin.k, " here and k ", it->second,
                         " on an earlier line; a layer is calibrated for one k"));
      }
    }
    bin.text = std::string(parts[1]);
    bins.push_back(std::move(bin));
  }
  return bins;
}

absl::StatusOr<std::vector<CalibratedBin>> ReadBins(const std::string& path, BinFile kind) {
  ASSIGN_OR_RETURN(const std::string text, ReadWholeFile(path, "calibration file"));
  return ParseBins(text, path, kind);
}

std::string FormatBins(const std::vector<CalibratedBin>& bins, BinFile kind) {
  std::string out;
  for (const CalibratedBin& b : bins) {
    absl::StrAppend(&out, "L", b.layer, "_H", b.head, ":", b.n, " ",
                    b.text.empty() ? ShortestText(b.value) : b.text, " ", b.samples);
    if (kind == BinFile::kThresholds) absl::StrAppend(&out, " ", b.k);
    out += '\n';
  }
  return out;
}

absl::Status WriteBins(const std::string& path, const std::vector<CalibratedBin>& bins,
                       BinFile kind) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file << FormatBins(bins, kind);
  file.close();
  if (!file) {
    return absl::PermissionDeniedError(absl::StrCat("cannot write the calibration file ", path));
  }
  return absl::OkStatus();
}

void SortBins(std::vector<CalibratedBin>& bins) {
  std::sort(bins.begin(), bins.end(), [](const CalibratedBin& a, const CalibratedBin& b) {
    return std::tie(a.layer, a.head, a.n) < std::tie(b.layer, b.head, b.n);
  });
}

}  // namespace tessera::top_theta
