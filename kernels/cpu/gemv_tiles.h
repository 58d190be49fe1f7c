// The GEMV and widening kernels, written once over a vector type `V` and compiled in each
// kernels/cpu/gemm_isa_*.cc with that instruction set's target attribute. Include it inside an
// anonymous namespace after defining TESSERA_GEMM_TARGET (the function attribute) and V:
//
//   struct V {
//     using Reg = ...;                 static constexpr int kLanes = ...;
//     static Reg Zero();               static Reg LoadF32(const float*);
//     static Reg LoadBf16(const uint16_t*);  static Reg LoadF16(const uint16_t*);
//     static Reg Fma(Reg a, Reg b, Reg c);   // a * b + c
//     static float Sum(Reg);          static void Store(float*, Reg);
//   };
//
// Every function here has internal linkage, so the per-instruction-set copies never merge.
// No header may be included from here: standard-library code instantiated under a wider target
// could be shared with other translation units.

// Loads kLanes weight elements of one dtype as F32 lanes.
template <typename T>
struct WeightLoad;
template <>
struct WeightLoad<float> {
  TESSERA_GEMM_TARGET static V::Reg Load(const float* p) { return V::LoadF32(p); }
};
struct Bf16Bits {
  uint16_t bits;
};
struct F16Bits {
  uint16_t bits;
};
template <>
struct WeightLoad<Bf16Bits> {
  TESSERA_GEMM_TARGET static V::Reg Load(const Bf16Bits* p) {
    return V::LoadBf16(reinterpret_cast<const uint16_t*>(p));
  }
};
template <>
struct WeightLoad<F16Bits> {
  TESSERA_GEMM_TARGET static V::Reg Load(const F16Bits* p) {
    return V::LoadF16(reinterpret_cast<const uint16_t*>(p));
  }
};

// Dots of the first `len` elements of R weight rows with MT activation rows (both of row stride
// k): out[r][c]. A len % kLanes tail is copied into zero-padded lanes, so every element goes
// through the same vector arithmetic.
template <typename T, int R, int MT>
TESSERA_GEMM_TARGET inline void DotTile(const T* w, const float* x, int64_t k, int64_t len,
                                        float out[R][MT]) {
  typename V::Reg acc[R][MT];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < MT; ++c) acc[r][c] = V::Zero();
  const int64_t vec_k = len - len % V::kLanes;
  for (int64_t i = 0; i < vec_k; i += V::kLanes) {
    typename V::Reg wv[R];
    for (int r = 0; r < R; ++r) wv[r] = WeightLoad<T>::Load(w + r * k + i);
    for (int c = 0; c < MT; ++c) {
      const typename V::Reg xv = V::LoadF32(x + c * k + i);
      for (int r = 0; r < R; ++r) acc[r][c] = V::Fma(wv[r], xv, acc[r][c]);
    }
  }
  if (vec_k < len) {
    T w_tail[R][V::kLanes];
    float x_tail[MT][V::kLanes];
    for (int r = 0; r < R; ++r)
      for (int64_t i = 0; i < V::kLanes; ++i) w_tail[r][i] = vec_k + i < len ? w[r * k + vec_k + i] : T{};
    for (int c = 0; c < MT; ++c)
      for (int64_t i = 0; i < V::kLanes; ++i) x_tail[c][i] = vec_k + i < len ? x[c * k + vec_k + i] : 0.0f;
    typename V::Reg wv[R];
    for (int r = 0; r < R; ++r) wv[r] = WeightLoad<T>::Load(w_tail[r]);
    for (int c = 0; c < MT; ++c) {
      const typename V::Reg xv = V::LoadF32(x_tail[c]);
      for (int r = 0; r < R; ++r) acc[r][c] = V::Fma(wv[r], xv, acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < MT; ++c) out[r][c] = V::Sum(acc[r][c]);
}

// Weight rows per tile for MT activation rows: R weight registers + one activation register +
// R * MT accumulators fit the 16 (AVX2) vector registers.
constexpr int TileRows(int mt) { return mt <= 2 ? 4 : (mt == 3 ? 3 : 2); }

// Writes (add = false) or adds the tile's dots to y.
template <int R, int MT>
TESSERA_GEMM_TARGET inline void StoreTile(const GemvTask& t, int64_t j, int64_t c0, bool add,
                                          const float dots[R][MT]) {
  for (int c = 0; c < MT; ++c) {
    float* dst = t.y + (c0 + c) * t.ldy + j;
    for (int r = 0; r < R; ++r) dst[r] = add ? dst[r] + dots[r][c] : dots[r][c];
  }
}

// Rows [begin, end) of w times activation rows [c0, c0 + MT), over elements [k0, k0 + len).
template <typename T, int MT>
TESSERA_GEMM_TARGET void RowsTimesGroup(const GemvTask& t, int64_t begin, int64_t end, int64_t c0,
                                        int64_t k0, int64_t len, bool add) {
  constexpr int R = TileRows(MT);
  const T* w = static_cast<const T*>(t.w) + k0;
  const float* x = t.x + c0 * t.k + k0;
  int64_t j = begin;
  for (; j + R <= end; j += R) {
    float dots[R][MT];
    DotTile<T, R, MT>(w + j * t.k, x, t.k, len, dots);
    StoreTile<R, MT>(t, j, c0, add, dots);
  }
  for (; j < end; ++j) {
    float dots[1][MT];
    DotTile<T, 1, MT>(w + j * t.k, x, t.k, len, dots);
    StoreTile<1, MT>(t, j, c0, add, dots);
  }
}

// Elements per pass over the activations with more than four rows: a chunk of all (up to 8) rows, 16 KiB, stays in L1
// while the weight rows stream past it, so the activation loads (one per multiply-add at 8 rows)
// hit L1 instead of L2. A multiple of every instruction set's lane count.
constexpr int64_t kChunk = 512;

template <typename T>
TESSERA_GEMM_TARGET void GemvRowsOf(const GemvTask& t, int64_t begin, int64_t end) {
  const int64_t chunk = t.m > 4 ? kChunk : t.k;  // one group of rows reads x once anyway
  for (int64_t k0 = 0; k0 < t.k; k0 += chunk) {
    const int64_t len = t.k - k0 < chunk ? t.k - k0 : chunk;
    const bool add = k0 > 0 || t.accumulate;
    for (int64_t c0 = 0; c0 < t.m; c0 += 4) {
      switch (t.m - c0) {
        case 1:
          RowsTimesGroup<T, 1>(t, begin, end, c0, k0, len, add);
          break;
        case 2:
          RowsTimesGroup<T, 2>(t, begin, end, c0, k0, len, add);
          break;
        case 3:
          RowsTimesGroup<T, 3>(t, begin, end, c0, k0, len, add);
          break;
        default:
          RowsTimesGroup<T, 4>(t, begin, end, c0, k0, len, add);
      }
    }
  }
}

TESSERA_GEMM_TARGET void GemvRows(const GemvTask& t, int64_t begin, int64_t end) {
  switch (t.w_dtype) {
    case DType::kBF16:
      return GemvRowsOf<Bf16Bits>(t, begin, end);
    case DType::kF16:
      return GemvRowsOf<F16Bits>(t, begin, end);
    default:
      return GemvRowsOf<float>(t, begin, end);
  }
}

template <typename T>
TESSERA_GEMM_TARGET void WidenOf(const T* src, int64_t count, float* dst) {
  int64_t i = 0;
  for (; i + V::kLanes <= count; i += V::kLanes) V::Store(dst + i, WeightLoad<T>::Load(src + i));
  if (i < count) {
    T tail[V::kLanes];
    float out[V::kLanes];
    for (int64_t l = 0; l < V::kLanes; ++l) tail[l] = i + l < count ? src[i + l] : T{};
    V::Store(out, WeightLoad<T>::Load(tail));
    for (int64_t l = 0; i + l < count; ++l) dst[i + l] = out[l];
  }
}

TESSERA_GEMM_TARGET void Widen(const void* src, DType dtype, int64_t count, float* dst) {
  switch (dtype) {
    case DType::kBF16:
      return WidenOf(static_cast<const Bf16Bits*>(src), count, dst);
    case DType::kF16:
      return WidenOf(static_cast<const F16Bits*>(src), count, dst);
    default:
      return WidenOf(static_cast<const float*>(src), count, dst);
  }
}
