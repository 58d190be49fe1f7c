// Element types of tensors, and scalar conversions between them.
//
// Weights may be stored as F32, F16 or BF16 (as Hugging Face checkpoints are); activations are
// always F32 on the CPU backend. I32 holds token ids, positions and cache slots; U8 raw bytes
// (messages between ranks).
#ifndef TESSERA_KERNELS_DTYPE_H_
#define TESSERA_KERNELS_DTYPE_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace tessera {

enum class DType : uint8_t { kF32, kF16, kBF16, kI32, kU8 };

// Bytes per element.
size_t DTypeSize(DType dtype);

// The safetensors spelling: "F32", "F16", "BF16", "I32", "U8".
absl::string_view DTypeName(DType dtype);

// Parses a safetensors dtype string. Types Tessera cannot compute with (F64, I8, F8_E4M3, ...)
// return InvalidArgument naming the type.
absl::StatusOr<DType> ParseDType(absl::string_view name);

inline float Bf16ToFloat(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// Round to nearest even, as torch does. A NaN becomes the canonical quiet NaN with its sign
// (sign | 0x7fc0): the payload is dropped, so every backend stores the same bits (the CUDA
// kernels' FromFloat does the same).
inline uint16_t FloatToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) {
    return static_cast<uint16_t>(((bits >> 16) & 0x8000u) | 0x7fc0u);
  }
  uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

// The canonical quiet F32 NaN with the sign of `nan` (sign | 0x7fc00000): what a Cast to F32
// writes for any NaN input, on every backend.
inline float CanonicalNan(float nan) {
  uint32_t bits;
  std::memcpy(&bits, &nan, sizeof(bits));
  bits = (bits & 0x80000000u) | 0x7fc00000u;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// IEEE 754 binary16 conversions (exact for every half value; round to nearest even on the way
// in, a NaN becoming the canonical quiet NaN with its sign, sign | 0x7e00, as torch does).
float F16ToFloat(uint16_t h);
uint16_t FloatToF16(float f);

}  // namespace tessera

#endif  // TESSERA_KERNELS_DTYPE_H_
