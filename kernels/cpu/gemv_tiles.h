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
//     static void Pin(Reg&);          // keeps the value in a register (an empty asm)
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

// acc[r][c] += w[r * k + i ...] * x[c * k + i ...] for one vector of lanes.
template <typename T, int R, int MT>
TESSERA_GEMM_TARGET inline void TileStep(const T* w, const float* x, int64_t k, int64_t i,
                                         typename V::Reg acc[R][MT]) {
  typename V::Reg wv[R];
  for (int r = 0; r < R; ++r) {
    wv[r] = WeightLoad<T>::Load(w + r * k + i);
    V::Pin(wv[r]);  // F32 weights too: loaded once, not once per activation row
  }
  for (int c = 0; c < MT; ++c) {
    typename V::Reg xv = V::LoadF32(x + c * k + i);
    V::Pin(xv);  // one load for the R multiply-adds, not one folded into each
    for (int r = 0; r < R; ++r) acc[r][c] = V::Fma(wv[r], xv, acc[r][c]);
  }
}

// Dots of R weight rows with MT activation rows (both of length and row stride k): out[r][c].
// The k % kLanes tail is copied into zero-padded lanes, so every element goes through the same
// vector arithmetic. Prefetches may point past the end of w (a hint never faults).
template <typename T, int R, int MT>
TESSERA_GEMM_TARGET inline void DotTile(const T* w, const float* x, int64_t k, float out[R][MT]) {
  typename V::Reg acc[R][MT];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < MT; ++c) acc[r][c] = V::Zero();
  const int64_t vec_k = k - k % V::kLanes;
  for (int64_t i = 0; i < vec_k; i += V::kLanes) {
    // The same columns of the next tile's rows (R rows further on): with short rows the
    // hardware prefetcher does not see R interleaved streams of a few lines each coming.
    for (int r = 0; r < R; ++r) __builtin_prefetch(w + (R + r) * k + i);
    TileStep<T, R, MT>(w, x, k, i, acc);
  }
  if (vec_k < k) {
    T w_tail[R][V::kLanes];
    float x_tail[MT][V::kLanes];
    for (int r = 0; r < R; ++r)
      for (int64_t l = 0; l < V::kLanes; ++l) w_tail[r][l] = vec_k + l < k ? w[r * k + vec_k + l] : T{};
    for (int c = 0; c < MT; ++c)
      for (int64_t l = 0; l < V::kLanes; ++l) x_tail[c][l] = vec_k + l < k ? x[c * k + vec_k + l] : 0.0f;
    TileStep<T, R, MT>(&w_tail[0][0], &x_tail[0][0], V::kLanes, 0, acc);
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < MT; ++c) out[r][c] = V::Sum(acc[r][c]);
}

// Weight rows per tile for MT activation rows: R weight registers + one activation register +
// R * MT accumulators fit the 16 AVX2 vector registers (at MT = 4: 3 + 1 + 12).
constexpr int TileRows(int mt) { return mt <= 2 ? 4 : 3; }

// Writes the tile's dots to y, or adds them (t.accumulate).
template <int R, int MT>
TESSERA_GEMM_TARGET inline void StoreTile(const GemvTask& t, int64_t j, int64_t c0, const float dots[R][MT]) {
  for (int c = 0; c < MT; ++c) {
    float* dst = t.y + (c0 + c) * t.ldy + j;
    for (int r = 0; r < R; ++r) dst[r] = t.accumulate ? dst[r] + dots[r][c] : dots[r][c];
  }
}

// Rows [begin, end) of w times activation rows [c0, c0 + MT).
template <typename T, int MT>
TESSERA_GEMM_TARGET void RowsTimesGroup(const GemvTask& t, int64_t begin, int64_t end, int64_t c0) {
  constexpr int R = TileRows(MT);
  const T* w = static_cast<const T*>(t.w);
  const float* x = t.x + c0 * t.k;
  int64_t j = begin;
  for (; j + R <= end; j += R) {
    float dots[R][MT];
    DotTile<T, R, MT>(w + j * t.k, x, t.k, dots);
    StoreTile<R, MT>(t, j, c0, dots);
  }
  for (; j < end; ++j) {
    float dots[1][MT];
    DotTile<T, 1, MT>(w + j * t.k, x, t.k, dots);
    StoreTile<1, MT>(t, j, c0, dots);
  }
}

// Every group of up to four activation rows passes over rows [begin, end) of w in turn; the
// caller keeps the range small enough (kernels/cpu/gemm.cc: 16 rows) that the rows stay in L2
// for the second group. Splitting k into chunks that keep x in L1 was measured slower: each
// chunk pays the tile's horizontal sums again.
template <typename T>
TESSERA_GEMM_TARGET void GemvRowsOf(const GemvTask& t, int64_t begin, int64_t end) {
  // F32 weights with more than one group: 12 rows (a multiple of every TileRows) at a time, so
  // the second group reads them from L1 right after the first pulled them from memory and the
  // memory stream does not wait for a whole second pass. Half weights are bound by the widening
  // arithmetic, not by memory, and measured faster with the whole range per group.
  const int64_t step = t.m > 4 && sizeof(T) == 4 ? 12 : end - begin;
  for (int64_t b = begin; b < end; b += step) {
    const int64_t e = end - b < step ? end : b + step;
    for (int64_t c0 = 0; c0 < t.m; c0 += 4) {
      switch (t.m - c0) {
        case 1:
          RowsTimesGroup<T, 1>(t, b, e, c0);
          break;
        case 2:
          RowsTimesGroup<T, 2>(t, b, e, c0);
          break;
        case 3:
          RowsTimesGroup<T, 3>(t, b, e, c0);
          break;
        default:
          RowsTimesGroup<T, 4>(t, b, e, c0);
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
