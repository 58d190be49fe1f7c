// GraphCapture: recording a sequence of enqueued ops once and replaying it (CUDA graphs), as a
// backend offers it (Backend::graph_capture(); null where the backend cannot capture).
//
// Captured work holds the addresses and shapes of every buffer its ops used, including the
// backend's own scratch. The backend keeps scratch that captured work may use alive while that
// work exists (kernels/scratch_arena.h), so a replay never touches freed memory; when scratch
// moves, scratch_generation() changes, and owners of older captured work should drop it and
// capture again so that the old scratch can be released.
#ifndef TESSERA_KERNELS_GRAPH_CAPTURE_H_
#define TESSERA_KERNELS_GRAPH_CAPTURE_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tessera {

// Work recorded by a GraphCapture. Its backend must outlive it.
class CapturedWork {
 public:
  virtual ~CapturedWork() = default;
  // Enqueues the recorded work again (asynchronous, like an op).
  virtual absl::Status Replay() = 0;
};

class GraphCapture {
 public:
  virtual ~GraphCapture() = default;
  // Ops enqueued between the two calls are recorded, not run. After BeginCapture() succeeded,
  // always call EndCapture(), also when an op in between failed: it ends the capture and then
  // reports the failure.
  virtual absl::Status BeginCapture() = 0;
  virtual absl::StatusOr<std::unique_ptr<CapturedWork>> EndCapture() = 0;
  // Changes whenever the backend moves scratch memory that ops use.
  virtual uint64_t scratch_generation() const = 0;
};

}  // namespace tessera

#endif  // TESSERA_KERNELS_GRAPH_CAPTURE_H_
