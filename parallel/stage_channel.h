// StageChannel: activations from one pipeline stage to the next.
//
// A message is a fixed header then the payload. The header carries what the receiver cannot
// know in advance once methods change token counts or control flow (an early exit, merged
// tokens): the number of token rows, flags, and the step, which is checked against the
// receiver's own step so that stages out of step fail loudly instead of mixing batches.
#ifndef TESSERA_PARALLEL_STAGE_CHANNEL_H_
#define TESSERA_PARALLEL_STAGE_CHANNEL_H_

#include <cstdint>

#include "absl/status/status.h"
#include "parallel/communicator.h"

namespace tessera {

struct StageHeader {
  int32_t n_tokens = 0;
  uint32_t flags = 0;
  int32_t step = 0;
  int32_t micro_batch = 0;
};

static_assert(sizeof(StageHeader) == 16, "StageHeader travels as four 32-bit words");

class StageChannel {
 public:
  // `pp` is the pipeline group; its rank is the stage.
  explicit StageChannel(Communicator* pp) : pp_(pp) {}

  // To stage + 1: the header, then `hidden` [header.n_tokens, dim] F32.
  absl::Status SendNext(const StageHeader& header, TensorView hidden);
  // From stage - 1: checks the header against `expected` (n_tokens, step, micro_batch) and
  // receives the payload into `hidden` [expected.n_tokens, dim]. Returns the received flags.
  absl::StatusOr<uint32_t> RecvPrevious(const StageHeader& expected, TensorView hidden);

 private:
  static constexpr int kHeaderTag = 100, kPayloadTag = 101;
  Communicator* pp_;
};

}  // namespace tessera

#endif  // TESSERA_PARALLEL_STAGE_CHANNEL_H_
