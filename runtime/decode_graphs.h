// DecodeGraphs: CUDA graphs of the decode step, one per (batch size, KV cache) shape.
//
// A decode step with the same number of sequences over the same cache enqueues the same kernels
// on the same buffers; only the contents of the index arrays (token ids, positions, slots)
// change, and those are copied in place before each replay. The first step of a shape runs
// eagerly (sizing every scratch buffer) and is then captured; later steps replay the graph,
// saving the launch of every op of every layer. Only the CUDA backend captures; elsewhere
// Supported() is false and the model runs eagerly.
#ifndef TESSERA_RUNTIME_DECODE_GRAPHS_H_
#define TESSERA_RUNTIME_DECODE_GRAPHS_H_

#include <cstdint>
#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace tessera {

// What a captured decode step depends on besides buffer contents.
struct DecodeGraphKey {
  int64_t tokens = 0;             // sequences in the step (one token each)
  const void* cache = nullptr;    // the KV cache's first key buffer
  int64_t n_slots = 0, max_seq = 0;
  bool operator<(const DecodeGraphKey& o) const;
};

class DecodeGraphs {
 public:
  // Whether `backend` can capture graphs (a CUDA backend in a CUDA build).
  static bool Supported(const Backend& backend);
  // `backend` must be Supported() and outlive this.
  explicit DecodeGraphs(Backend* backend);
  ~DecodeGraphs();

  bool Has(const DecodeGraphKey& key) const;
  // Records the ops `enqueue` puts on the backend's stream (without running them) as the graph
  // of `key`. `enqueue` must not synchronize, copy or allocate.
  absl::Status Capture(const DecodeGraphKey& key, const std::function<absl::Status()>& enqueue);
  // Enqueues the graph of `key` (which must exist).
  absl::Status Replay(const DecodeGraphKey& key);
  // Drops every graph (buffers they captured are about to change).
  void Clear();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera

#endif  // TESSERA_RUNTIME_DECODE_GRAPHS_H_
