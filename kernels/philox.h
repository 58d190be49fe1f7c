// Philox4x32-10, the counter-based generator of Salmon et al., "Parallel random numbers: as easy
// as 1, 2, 3" (SC'11). Output is a pure function of (counter, key): no state, so every rank and
// every batch composition draws the same numbers for the same (seed, request, step). The rounds
// are shared by host code and CUDA kernels (PhiloxRounds), so both draw the same bits.
#ifndef TESSERA_KERNELS_PHILOX_H_
#define TESSERA_KERNELS_PHILOX_H_

#include <array>
#include <cstdint>

#if defined(__CUDACC__)
#define TESSERA_HOST_DEVICE __host__ __device__
#else
#define TESSERA_HOST_DEVICE
#endif

namespace tessera {

// The ten rounds on `c` (four words, in place) under the key (k0, k1).
TESSERA_HOST_DEVICE inline void PhiloxRounds(uint32_t c[4], uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c[0];
    const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c[2];
    const uint32_t c0 = static_cast<uint32_t>(p1 >> 32) ^ c[1] ^ k0;
    const uint32_t c2 = static_cast<uint32_t>(p0 >> 32) ^ c[3] ^ k1;
    c[0] = c0;
    c[1] = static_cast<uint32_t>(p1);
    c[2] = c2;
    c[3] = static_cast<uint32_t>(p0);
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
}

// A uniform float in [0, 1) from the top 24 of 32 random bits.
TESSERA_HOST_DEVICE inline float UniformFromBits(uint32_t bits) {
  return static_cast<float>(bits >> 8) * 0x1.0p-24f;
}

using PhiloxCounter = std::array<uint32_t, 4>;
using PhiloxKey = std::array<uint32_t, 2>;

inline PhiloxCounter Philox4x32(PhiloxCounter c, PhiloxKey k) {
  PhiloxRounds(c.data(), k[0], k[1]);
  return c;
}

}  // namespace tessera

#endif  // TESSERA_KERNELS_PHILOX_H_
