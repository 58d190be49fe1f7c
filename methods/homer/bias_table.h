// BiasTable: HOMER's calibration bias (shared/specs/homer.md §3), bias[layer][distance] in the
// units of the significance score (the largest pre-softmax logit over heads): the mean such
// logit a key at that distance (in position ids) from the query gets on neutral text. Written by
// `tessera calibrate --homer` and by tools/reference/homer_bias_from_pt.py (the official .pt
// files), as safetensors: tensor "bias" F32 [layers, distances] and __metadata__ format
// "tessera.homer_bias", version "1", layers, distances, samples and free-form provenance
// ("model", "rope").
#ifndef TESSERA_METHODS_HOMER_BIAS_TABLE_H_
#define TESSERA_METHODS_HOMER_BIAS_TABLE_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera::homer {

struct BiasTable {
  int64_t layers = 0;
  int64_t distances = 0;
  std::vector<float> values;  // [layers, distances], row-major
  int64_t samples = 0;        // sequences averaged (0: unknown)
  std::map<std::string, std::string> provenance;  // "model", "rope", ...

  float at(int64_t layer, int64_t distance) const { return values[layer * distances + distance]; }
};

absl::Status WriteBiasTable(const std::string& path, const BiasTable& table);
// Errors name the file: not a HOMER bias file, a wrong shape or dtype, a non-finite value.
absl::StatusOr<BiasTable> ReadBiasTable(const std::string& path);
// InvalidArgument naming `path` unless the table has `layers` rows and covers distances up to
// max_chunk_len - 1 (what to change: calibrate for this model and chunk length).
absl::Status CheckBiasFits(const BiasTable& table, const std::string& path, int64_t layers,
                           int64_t max_chunk_len);

}  // namespace tessera::homer

#endif  // TESSERA_METHODS_HOMER_BIAS_TABLE_H_
