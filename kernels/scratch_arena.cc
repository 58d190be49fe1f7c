#include "kernels/scratch_arena.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace tessera {

ScratchArena::ScratchArena(int kinds, AllocateFn allocate, ReleaseFn release)
    : allocate_(std::move(allocate)), release_(std::move(release)), buffers_(kinds) {}

ScratchArena::~ScratchArena() {
  for (Buffer& b : buffers_) release_(b.data);
  for (Buffer& b : retired_) release_(b.data);
}

absl::StatusOr<void*> ScratchArena::Get(int kind, size_t bytes, absl::string_view op,
                                        bool capturing) {
  Buffer& b = buffers_[kind];
  if (bytes <= b.bytes) return b.data;
  if (capturing) {
    return absl::FailedPreconditionError(absl::StrCat(
        op, " needs ", bytes, " bytes of scratch but ", b.bytes,
        " are allocated, and memory cannot be allocated during graph capture: run the captured "
        "step once eagerly (same shapes) before capturing it"));
  }
  // Grow by at least a quarter so that slowly growing shapes do not reallocate every call.
  const size_t want = std::max(bytes, b.bytes + b.bytes / 4);
  ASSIGN_OR_RETURN(void* data, allocate_(want, absl::StrCat("the scratch of ", op)));
  if (b.data != nullptr) {
    if (live_captures_ > 0) {
      retired_.push_back(b);  // captured work may still replay with it
    } else {
      release_(b.data);
    }
  }
  b.data = data;
  b.bytes = want;
  ++generation_;
  return b.data;
}

void ScratchArena::CaptureDestroyed() {
  if (live_captures_ > 0) --live_captures_;
  if (live_captures_ > 0) return;
  for (Buffer& r : retired_) release_(r.data);
  retired_.clear();
}

size_t ScratchArena::retired_bytes() const {
  size_t total = 0;
  for (const Buffer& r : retired_) total += r.bytes;
  return total;
}

}  // namespace tessera
