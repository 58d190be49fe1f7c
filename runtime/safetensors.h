// Memory-mapped safetensors checkpoints, single-file or sharded.
//
// Format: an 8-byte little-endian header length N, an N-byte JSON header
// {"__metadata__": {...}, "<name>": {"dtype": "BF16", "shape": [..], "data_offsets": [b, e]}},
// then the data; offsets are relative to the end of the header. The header is validated when the
// file is opened, as the reference implementation does: every name appears once, __metadata__
// (optional) maps strings to strings, each entry's dtype is known and its byte count equals
// dtype size x shape product, and the entries sorted by offset tile the data section exactly (no
// overlap, no gap, nothing after the last one). The path must be a regular file.
//
// Tensors are TensorViews into a read-only private mapping: no copy is made, and pages are read
// from disk only when compute touches them. The views stay valid while the Checkpoint lives.
// `bytes_mapped_in_use()` style accounting is left to callers (LlamaWeights sums what it uses).
#ifndef TESSERA_RUNTIME_SAFETENSORS_H_
#define TESSERA_RUNTIME_SAFETENSORS_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/tensor_view.h"

namespace tessera {

// One tensor entry of a safetensors header.
struct TensorEntry {
  DType dtype;
  std::vector<int64_t> shape;
  const char* data = nullptr;  // into the mapping
  size_t bytes = 0;
  std::string file;  // for messages

  TensorView view() const;
};

class SafetensorsFile {
 public:
  // Maps and validates `path`. Errors name the file and the tensor.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::map<std::string, TensorEntry>& tensors() const { return tensors_; }
  const std::string& path() const { return path_; }
  size_t file_size() const { return size_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t size_ = 0;
  std::map<std::string, TensorEntry> tensors_;
};

// All tensors of a checkpoint directory: model.safetensors, or the shards named by
// model.safetensors.index.json (whose weight_map must map names to file names in the directory,
// every one of which must exist when the checkpoint is opened). Shard files are mapped and
// validated on the first Find() of one of their tensors, so a rank reads only the shards holding
// its weights.
// Not thread-safe.
class Checkpoint {
 public:
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& model_dir);

  // The tensor called `name`, or NotFound naming the checkpoint; errors of its shard file
  // (missing, truncated, malformed) surface here.
  absl::StatusOr<const TensorEntry*> Find(const std::string& name);
  bool Contains(const std::string& name) const { return file_of_.count(name) > 0; }
  // Every tensor name, with the shard file that holds it.
  const std::map<std::string, std::string>& names() const { return file_of_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::map<std::string, std::string> file_of_;  // tensor name -> shard file name
  std::map<std::string, std::unique_ptr<SafetensorsFile>> files_;  // opened shards
};

}  // namespace tessera

#endif  // TESSERA_RUNTIME_SAFETENSORS_H_
