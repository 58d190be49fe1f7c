// Fuzzes Checkpoint::Open and Checkpoint::Find on a sharded checkpoint: the input is
// model.safetensors.index.json; the directory also holds two valid shards, a.safetensors
// (tensors "x", "y") and b.safetensors (tensor "y", so an index that sends "x" to b finds it in
// two shards). Every name of the weight map is looked up, which opens the shards it names.
#include <cstring>
#include <string>

#include "runtime/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

// A safetensors file whose F32 tensors `names` hold 2 floats each.
std::string TinyShard(const std::vector<std::string>& names) {
  std::string header = "{";
  for (size_t i = 0; i < names.size(); ++i) {
    header += (i ? "," : "") + ("\"" + names[i] + "\":{\"dtype\":\"F32\",\"shape\":[2],") +
              "\"data_offsets\":[" + std::to_string(8 * i) + "," + std::to_string(8 * i + 8) +
              "]}";
  }
  header += "}";
  std::string file(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(file.data(), &n, 8);
  return file + header + std::string(8 * names.size(), '\x01');
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  tessera::fuzz::WriteScratchFile("a.safetensors", TinyShard({"x", "y"}));
  tessera::fuzz::WriteScratchFile("b.safetensors", TinyShard({"y"}));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tessera::fuzz::WriteScratchFile("model.safetensors.index.json",
                                  tessera::fuzz::AsText(data, size));
  auto ckpt = tessera::Checkpoint::Open(tessera::fuzz::ScratchDir());
  if (!ckpt.ok()) return 0;
  int looked_up = 0;
  for (const auto& [name, file] : (*ckpt)->names()) {
    auto entry = (*ckpt)->Find(name);
    if (entry.ok() && (*entry)->bytes != 8) __builtin_trap();  // every tiny tensor is 8 bytes
    if (++looked_up == 16) break;
  }
  (void)(*ckpt)->Find("not in the index").ok();
  return 0;
}
