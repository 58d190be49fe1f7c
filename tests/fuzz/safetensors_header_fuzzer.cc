// Fuzzes SafetensorsFile::Open: the input is a whole .safetensors file (8-byte header length,
// JSON header, data). Whatever opens must describe tensors that lie inside the mapping and
// agree with their views (non-negative dimensions whose products, as the kernels form them, do
// not overflow); every byte of every tensor is read to prove it.
#include <cstdlib>

#include "runtime/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using tessera::fuzz::AsText;
  const std::string path = tessera::fuzz::WriteScratchFile("model.safetensors", AsText(data, size));
  auto file = tessera::SafetensorsFile::Open(path);
  if (!file.ok()) return 0;
  const char* base = nullptr;
  unsigned checksum = 0;
  for (const auto& [name, entry] : (*file)->tensors()) {
    const tessera::TensorView view = entry.view();
    for (int64_t d : entry.shape) {
      if (d < 0) std::abort();
    }
    if (view.bytes() != entry.bytes) std::abort();  // shape x dtype disagrees with the span
    if (view.rank > 0 && view.row_size() < 0) std::abort();
    for (size_t i = 0; i < entry.bytes; ++i) checksum += static_cast<unsigned char>(entry.data[i]);
    if (base == nullptr || entry.data < base) base = entry.data;
  }
  // Opening succeeded, so the tensors tile the data section: nothing may end past the file.
  for (const auto& [name, entry] : (*file)->tensors()) {
    if (static_cast<size_t>(entry.data - base) + entry.bytes > (*file)->file_size()) std::abort();
  }
  return static_cast<int>(checksum & 0);
}
