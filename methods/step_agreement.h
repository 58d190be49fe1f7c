// --check-rank-agreement for runners that decide per step: every rank of the tensor-parallel
// group hashes the step's (token, decision) pairs, the hashes are all-gathered, and a difference
// fails the step on every rank, naming it and the ranks that differ from rank 0.
#ifndef TESSERA_METHODS_STEP_AGREEMENT_H_
#define TESSERA_METHODS_STEP_AGREEMENT_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "parallel/communicator.h"

namespace tessera {

// `tp` may be null (one rank: nothing to compare). `what` names the decisions in the message.
absl::Status CheckStepAgreement(Communicator* tp, int32_t step,
                                const std::vector<std::pair<int32_t, uint32_t>>& decided,
                                absl::string_view what);

}  // namespace tessera

#endif  // TESSERA_METHODS_STEP_AGREEMENT_H_
