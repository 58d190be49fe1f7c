// StageChannel: activations and control from one pipeline stage to the next.
//
// A message is a fixed header, then (flag kRowSubset) the batch rows the payload holds, then the
// payload [n_tokens, dim]. The header carries what the receiver cannot know in advance once
// methods change token counts or control flow: the number of rows (variable: a method may drop
// or merge rows, or exit before the last stage and send none), flags, the global layer of an
// exit, and a small method payload (StageMessage) that the receiving stage's hooks read. The step
// and micro-batch are checked against the receiver's own, so that stages out of step fail loudly
// instead of mixing batches.
//
//   sender:   channel.SendNext(header, hidden, rows);
//   receiver: ASSIGN_OR_RETURN(StageHeader h, channel.RecvHeader(step, micro_batch));
//             channel.RecvRows(h, &rows);  channel.RecvPayload(h, hidden [h.n_tokens, dim]);
// Every header must be followed by its rows (when flagged) and payload (when n_tokens > 0), in
// that order, before the next header.
#ifndef TESSERA_PARALLEL_STAGE_CHANNEL_H_
#define TESSERA_PARALLEL_STAGE_CHANNEL_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "parallel/communicator.h"

namespace tessera {

// The control word that travels with a micro-batch through the stages: flags (bits 0-7 are the
// runtime's, bits 8-31 a method's) and a method's payload words.
struct StageMessage {
  static constexpr uint32_t kExited = 1u << 0;     // the pass stopped on an earlier stage
  static constexpr uint32_t kRowSubset = 1u << 1;  // the rows are a subset of the batch's
  static constexpr uint32_t kMethodFlagsMask = 0xFFFFFF00u;
  static constexpr int kPayloadWords = 8;

  uint32_t flags = 0;
  int32_t exit_layer = -1;  // with kExited: the global layer after which the pass stopped
  int32_t payload[kPayloadWords] = {};
};

struct StageHeader {
  int32_t n_tokens = 0;  // payload rows
  int32_t step = 0;
  int32_t micro_batch = 0;
  int32_t reserved = 0;
  StageMessage message;
};

static_assert(sizeof(StageHeader) == 14 * 4, "StageHeader travels as fourteen 32-bit words");

class StageChannel {
 public:
  // `pp` is the pipeline group; its rank is the stage.
  explicit StageChannel(Communicator* pp) : pp_(pp) {}

  // To stage + 1: the header; with kRowSubset, `rows` (header.n_tokens batch row indices); then
  // `hidden` [header.n_tokens, dim] F32 unless n_tokens is 0.
  absl::Status SendNext(const StageHeader& header, TensorView hidden,
                        absl::Span<const int32_t> rows = {});
  // From stage - 1: the next header. InternalError naming both stages when its step or
  // micro-batch differ from the receiver's (its rows and payload are then drained, given the
  // width `dim` of a payload row, so that the sender is not left waiting).
  absl::StatusOr<StageHeader> RecvHeader(int32_t step, int32_t micro_batch, int64_t dim);
  // The rows that follow a header with kRowSubset (empty otherwise).
  absl::Status RecvRows(const StageHeader& header, std::vector<int32_t>* rows);
  // The payload that follows: `hidden` must be [header.n_tokens, dim].
  absl::Status RecvPayload(const StageHeader& header, TensorView hidden);

 private:
  static constexpr int kHeaderTag = 100, kRowsTag = 102, kPayloadTag = 101;
  Communicator* pp_;
};

}  // namespace tessera

#endif  // TESSERA_PARALLEL_STAGE_CHANNEL_H_
