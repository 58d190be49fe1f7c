// Reading the golden fixtures that tools/make_fixtures.py records (golden.safetensors holds, per
// prompt, `prompt{i}.input_ids`, `prompt{i}.logits` and `prompt{i}.greedy`).
#ifndef TESSERA_TESTS_GOLDEN_GOLDEN_FIXTURE_H_
#define TESSERA_TESTS_GOLDEN_GOLDEN_FIXTURE_H_

#include <string>
#include <vector>

#include "runtime/llama_model.h"
#include "runtime/safetensors.h"

namespace tessera::testing {

// An I32 tensor of the golden file as ids.
inline std::vector<int32_t> ReadIds(const SafetensorsFile& golden, const std::string& name) {
  const TensorEntry& t = golden.tensors().at(name);
  const int32_t* p = reinterpret_cast<const int32_t*>(t.data);
  return std::vector<int32_t>(p, p + t.shape[0]);
}

// One sequence in slot 0 with the logits of every position requested.
inline ForwardBatch AllPositions(const std::vector<int32_t>& ids) {
  ForwardBatch b;
  for (size_t i = 0; i < ids.size(); ++i) {
    b.tokens.push_back(ids[i]);
    b.positions.push_back(static_cast<int32_t>(i));
    b.slots.push_back(0);
    b.logit_rows.push_back(static_cast<int32_t>(i));
  }
  return b;
}

}  // namespace tessera::testing

#endif  // TESSERA_TESTS_GOLDEN_GOLDEN_FIXTURE_H_
