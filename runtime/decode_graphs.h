// DecodeGraphs: captured graphs of the decode step (CUDA graphs), one per (batch size, KV cache)
// shape.
//
// A decode step with the same number of sequences over the same cache enqueues the same kernels
// on the same buffers; only the contents of the index arrays (token ids, positions, slots)
// change, and those are copied in place before each replay. The first step of a shape runs
// eagerly (sizing every scratch buffer) and is then captured; later steps replay the graph,
// saving the launch of every op of every layer. Only a backend with graph capture
// (Backend::graph_capture(), the CUDA backend) captures; elsewhere Supported() is false and the
// model runs eagerly.
//
// Scratch. Ops use backend scratch that grows when a larger shape arrives (a mixed prefill +
// decode step, a longer prefill, a larger batch). The backend keeps scratch that a live graph
// recorded alive, so a replay never touches freed memory, and bumps its scratch generation;
// every lookup here compares that generation with the one the graphs were captured at and drops
// them all when it changed, so the next step of each shape runs eagerly and is captured again on
// the current buffers (and the old scratch is released).
#ifndef TESSERA_RUNTIME_DECODE_GRAPHS_H_
#define TESSERA_RUNTIME_DECODE_GRAPHS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/graph_capture.h"

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
  static bool Supported(Backend& backend);
  // `capture` (Backend::graph_capture() of a Supported backend) must outlive this.
  explicit DecodeGraphs(GraphCapture* capture);
  ~DecodeGraphs();

  // Whether a graph of `key` exists and was captured on the backend's current scratch.
  bool Has(const DecodeGraphKey& key);
  // Records the ops `enqueue` puts on the backend's stream (without running them) as the graph
  // of `key`. `enqueue` must not synchronize, copy or allocate.
  absl::Status Capture(const DecodeGraphKey& key, const std::function<absl::Status()>& enqueue);
  // Enqueues the graph of `key`; NotFound unless Has(key).
  absl::Status Replay(const DecodeGraphKey& key);
  // Drops every graph (buffers they captured are about to change).
  void Clear();
  // Graphs held, and how many were dropped because scratch moved.
  int64_t size() const { return static_cast<int64_t>(graphs_.size()); }
  int64_t dropped_for_scratch() const { return dropped_for_scratch_; }

 private:
  // Drops every graph when the backend's scratch moved since they were captured.
  void DropIfScratchMoved();

  GraphCapture* capture_;
  std::map<DecodeGraphKey, std::unique_ptr<CapturedWork>> graphs_;
  uint64_t generation_ = 0;  // the scratch generation the graphs were captured at
  int64_t dropped_for_scratch_ = 0;
};

}  // namespace tessera

#endif  // TESSERA_RUNTIME_DECODE_GRAPHS_H_
