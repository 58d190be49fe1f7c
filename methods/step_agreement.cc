#include "methods/step_agreement.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/status_macros.h"

namespace tessera {

absl::Status CheckStepAgreement(Communicator* tp, int32_t step,
                                const std::vector<std::pair<int32_t, uint32_t>>& decided,
                                absl::string_view what) {
  if (tp == nullptr || tp->size() == 1) return absl::OkStatus();
  uint32_t h = 2166136261u;  // FNV-1a over the words
  for (const auto& [token, decision] : decided) {
    h = (h ^ static_cast<uint32_t>(token)) * 16777619u;
    h = (h ^ decision) * 16777619u;
  }
  const int n = tp->size();
  int32_t mine = static_cast<int32_t>(h);
  std::vector<int32_t> all(n);
  RETURN_IF_ERROR(tp->AllGather(TensorView::Of(&mine, DType::kI32, {1}),
                                TensorView::Of(all.data(), DType::kI32, {n})));
  std::vector<std::string> differ;
  for (int r = 1; r < n; ++r) {
    if (all[r] != all[0]) differ.push_back(absl::StrCat(r));
  }
  if (differ.empty()) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("--check-rank-agreement: at step ", step, " the ", what,
                                          " of tensor-parallel rank(s) ",
                                          absl::StrJoin(differ, ", "), " differ from rank 0's"));
}

}  // namespace tessera
