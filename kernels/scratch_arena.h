// ScratchArena: the scratch buffers a device backend's ops use internally (split-KV partial
// states, the activation cast before a half-precision GEMM, radix-sort space), one buffer per
// kind, grown when a larger shape arrives and never moved under captured work.
//
// A captured graph (CUDA graphs) records buffer addresses. If a buffer it recorded were freed
// when a later, larger call grows it, the next replay would read and write freed memory. So
// while any captured work is alive (CaptureCreated / CaptureDestroyed), a buffer that grows is
// retired instead of freed: the old graphs keep valid memory of the size they were captured
// with, and retired buffers are freed when the last captured work is destroyed. Every move of a
// buffer bumps generation(): captured work of an older generation still replays correctly, but
// holds retired memory, so its owner (runtime/decode_graphs.h) drops and recaptures it.
//
// Host-side bookkeeping only: memory comes from the `allocate` / `release` functions given at
// construction (cudaMalloc / cudaFree in the CUDA backend, plain heap memory in tests). One
// thread at a time, like the backend that owns it.
#ifndef TESSERA_KERNELS_SCRATCH_ARENA_H_
#define TESSERA_KERNELS_SCRATCH_ARENA_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tessera {

class ScratchArena {
 public:
  // `allocate(bytes, what)` returns memory or an error naming `what`; `release(p)` frees it once
  // no enqueued work uses it (the CUDA backend synchronizes its stream first).
  using AllocateFn = std::function<absl::StatusOr<void*>(size_t bytes, absl::string_view what)>;
  using ReleaseFn = std::function<void(void* pointer)>;

  ScratchArena(int kinds, AllocateFn allocate, ReleaseFn release);
  ~ScratchArena();  // releases every buffer, retired ones too
  ScratchArena(const ScratchArena&) = delete;
  ScratchArena& operator=(const ScratchArena&) = delete;

  // A buffer of at least `bytes` for `kind` (0 <= kind < kinds). Grows by at least a quarter
  // when too small, which moves the buffer and bumps generation(); refused (FailedPrecondition
  // naming `op`) while `capturing`, since memory cannot be allocated during a capture.
  absl::StatusOr<void*> Get(int kind, size_t bytes, absl::string_view op, bool capturing);

  // The current size of `kind`'s buffer.
  size_t bytes(int kind) const { return buffers_[kind].bytes; }
  // Bumped whenever a buffer moves.
  uint64_t generation() const { return generation_; }
  // Captured work that may hold the current buffers' addresses was created / destroyed.
  void CaptureCreated() { ++live_captures_; }
  void CaptureDestroyed();
  int64_t live_captures() const { return live_captures_; }
  // Bytes of buffers kept alive only for captured work.
  size_t retired_bytes() const;

 private:
  struct Buffer {
    void* data = nullptr;
    size_t bytes = 0;
  };
  AllocateFn allocate_;
  ReleaseFn release_;
  std::vector<Buffer> buffers_;
  std::vector<Buffer> retired_;
  uint64_t generation_ = 0;
  int64_t live_captures_ = 0;
};

}  // namespace tessera

#endif  // TESSERA_KERNELS_SCRATCH_ARENA_H_
