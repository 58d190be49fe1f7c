// KvCache bookkeeping: lengths and positions per layer and slot, Append's capacity check,
// Compact's argument checks, and that Compact moves the kept rows (and only those) to the front,
// for F32 and half-precision caches; bytes per token by dtype.
#include "runtime/kv_cache.h"

#include <numeric>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

constexpr int64_t kLayers = 2, kKvHeads = 2, kHeadDim = 4, kSlots = 3, kCapacity = 8;
constexpr int64_t kRow = kKvHeads * kHeadDim;

class KvCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(backend_, MakeBackend(BackendKind::kCpu));
    ASSERT_OK_AND_ASSIGN(cache_, KvCache::Create(backend_.get(), kLayers, kKvHeads, kHeadDim,
                                                 kSlots, kCapacity, DType::kF32));
  }
  // Entry e of `slot` in layer `layer` holds the value 1000 * layer + 100 * slot + e (K) and its
  // negation (V) in every element.
  void Fill(int64_t layer, int64_t slot) {
    float* k = cache_->k(layer).as<float>() + slot * kCapacity * kRow;
    float* v = cache_->v(layer).as<float>() + slot * kCapacity * kRow;
    for (int64_t e = 0; e < kCapacity; ++e) {
      for (int64_t d = 0; d < kRow; ++d) {
        k[e * kRow + d] = 1000.0f * layer + 100.0f * slot + e;
        v[e * kRow + d] = -k[e * kRow + d];
      }
    }
  }
  float K(int64_t layer, int64_t slot, int64_t entry, int64_t d = 0) const {
    return cache_->k(layer).as<float>()[(slot * kCapacity + entry) * kRow + d];
  }
  float V(int64_t layer, int64_t slot, int64_t entry, int64_t d = 0) const {
    return cache_->v(layer).as<float>()[(slot * kCapacity + entry) * kRow + d];
  }

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<KvCache> cache_;
};

TEST_F(KvCacheTest, AppendRecordsPositionsPerLayerAndSlot) {
  ASSERT_OK_AND_ASSIGN(int32_t first, cache_->Append(0, 1, std::vector<int32_t>{5, 6, 7}));
  EXPECT_EQ(first, 0);
  ASSERT_OK_AND_ASSIGN(first, cache_->Append(0, 1, std::vector<int32_t>{40}));
  EXPECT_EQ(first, 3);
  EXPECT_EQ(cache_->length(0, 1), 4);
  EXPECT_EQ(cache_->length(1, 1), 0);
  EXPECT_EQ(cache_->length(0, 0), 0);
  const auto pos = cache_->positions(0, 1);
  EXPECT_EQ(std::vector<int32_t>(pos.begin(), pos.end()), (std::vector<int32_t>{5, 6, 7, 40}));
  cache_->Clear(1);
  EXPECT_EQ(cache_->length(0, 1), 0);
}

TEST_F(KvCacheTest, AppendRefusesMoreThanTheCapacity) {
  ASSERT_OK(cache_->Append(1, 2, std::vector<int32_t>(6, 0)));
  const auto status = cache_->Append(1, 2, std::vector<int32_t>(3, 0));
  EXPECT_EQ(status.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(status.status().message().find("capacity is 8"), std::string::npos)
      << status.status();
  EXPECT_EQ(cache_->length(1, 2), 6);  // nothing reserved
  EXPECT_FALSE(cache_->Append(2, 0, std::vector<int32_t>{0}).ok());  // no layer 2
}

TEST_F(KvCacheTest, CompactMovesTheKeptRowsAndPositions) {
  for (int64_t l = 0; l < kLayers; ++l) {
    for (int64_t s = 0; s < kSlots; ++s) Fill(l, s);
  }
  std::vector<int32_t> positions(7);
  std::iota(positions.begin(), positions.end(), 10);
  for (int64_t s = 0; s < kSlots; ++s) ASSERT_OK(cache_->Append(1, s, positions));
  ASSERT_OK(cache_->Compact(1, 1, std::vector<int32_t>{1, 4, 6}));
  EXPECT_EQ(cache_->length(1, 1), 3);
  const auto pos = cache_->positions(1, 1);
  EXPECT_EQ(std::vector<int32_t>(pos.begin(), pos.end()), (std::vector<int32_t>{11, 14, 16}));
  for (int64_t d = 0; d < kRow; ++d) {
    EXPECT_EQ(K(1, 1, 0, d), 1101.0f);
    EXPECT_EQ(K(1, 1, 1, d), 1104.0f);
    EXPECT_EQ(K(1, 1, 2, d), 1106.0f);
    EXPECT_EQ(V(1, 1, 2, d), -1106.0f);
  }
  // Other slots and layers are untouched.
  EXPECT_EQ(K(1, 0, 1), 1001.0f);
  EXPECT_EQ(K(1, 2, 1), 1201.0f);
  EXPECT_EQ(K(0, 1, 1), 101.0f);
  EXPECT_EQ(cache_->length(1, 0), 7);
  // An empty keep-set empties the slot.
  ASSERT_OK(cache_->Compact(1, 2, {}));
  EXPECT_EQ(cache_->length(1, 2), 0);
}

// HOMER's merge: a child's rows appended after another's, and the two suffix copies averaged.
TEST_F(KvCacheTest, CopyEntriesAndAverageEntries) {
  for (int64_t s = 0; s < kSlots; ++s) Fill(1, s);
  ASSERT_OK(cache_->Append(1, 0, std::vector<int32_t>{0, 1, 2, 3, 4}));
  ASSERT_OK(cache_->Append(1, 1, std::vector<int32_t>{0, 11, 12, 13}));
  // Slot 1's rows 2..3 become the mean of its rows and slot 0's rows 3..4.
  ASSERT_OK(cache_->AverageEntries(1, 1, 2, 0, 3, 2));
  EXPECT_EQ(K(1, 1, 2), (1102.0f + 1003.0f) * 0.5f);
  EXPECT_EQ(V(1, 1, 3, kRow - 1), -(1103.0f + 1004.0f) * 0.5f);
  EXPECT_EQ(K(1, 0, 3), 1003.0f);  // the other slot is read only
  // Slot 1's rows 1..3 to slot 0 from row 3: slot 0 ends at 6 entries, positions copied.
  ASSERT_OK(cache_->CopyEntries(*cache_, 1, 1, 1, 3, 0, 3));
  EXPECT_EQ(cache_->length(1, 0), 6);
  const auto pos = cache_->positions(1, 0);
  EXPECT_EQ(std::vector<int32_t>(pos.begin(), pos.end()), (std::vector<int32_t>{0, 1, 2, 11, 12, 13}));
  EXPECT_EQ(K(1, 0, 2), 1002.0f);
  EXPECT_EQ(K(1, 0, 3), 1101.0f);
  EXPECT_EQ(K(1, 0, 4), (1102.0f + 1003.0f) * 0.5f);
  EXPECT_EQ(V(1, 0, 5), -(1103.0f + 1004.0f) * 0.5f);
  // Into another cache of the same shape, from row 0.
  ASSERT_OK_AND_ASSIGN(auto other, KvCache::Create(backend_.get(), kLayers, kKvHeads, kHeadDim,
                                                   1, kCapacity, DType::kF32));
  ASSERT_OK(other->CopyEntries(*cache_, 1, 0, 0, 6, 0, 0));
  EXPECT_EQ(other->length(1, 0), 6);
  EXPECT_EQ(other->k(1).as<float>()[4 * kRow], (1102.0f + 1003.0f) * 0.5f);
  // Refused: one slot onto itself, past the source's length, a gap after the destination's
  // entries, another shape.
  EXPECT_FALSE(cache_->CopyEntries(*cache_, 1, 0, 0, 2, 0, 0).ok());
  EXPECT_FALSE(cache_->CopyEntries(*cache_, 1, 1, 2, 3, 2, 0).ok());
  EXPECT_FALSE(cache_->CopyEntries(*cache_, 1, 1, 0, 2, 2, 1).ok());
  EXPECT_FALSE(cache_->AverageEntries(1, 1, 0, 1, 0, 1).ok());
  EXPECT_FALSE(cache_->AverageEntries(1, 1, 3, 0, 0, 2).ok());
  ASSERT_OK_AND_ASSIGN(auto narrow, KvCache::Create(backend_.get(), kLayers, 1, kHeadDim, 1,
                                                    kCapacity, DType::kF32));
  EXPECT_FALSE(narrow->CopyEntries(*cache_, 1, 0, 0, 1, 0, 0).ok());
}

TEST_F(KvCacheTest, CompactRefusesABadKeepList) {
  ASSERT_OK(cache_->Append(0, 0, std::vector<int32_t>{0, 1, 2, 3}));
  for (const std::vector<int32_t>& bad :
       {std::vector<int32_t>{2, 1}, std::vector<int32_t>{1, 1}, std::vector<int32_t>{0, 4},
        std::vector<int32_t>{-1}}) {
    const absl::Status s = cache_->Compact(0, 0, bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  }
  EXPECT_EQ(cache_->length(0, 0), 4);
  EXPECT_EQ(cache_->Compact(0, 5, {}).code(), absl::StatusCode::kOutOfRange);
}

TEST_F(KvCacheTest, CompactOfAllLayers) {
  for (int64_t l = 0; l < kLayers; ++l) {
    Fill(l, 0);
    ASSERT_OK(cache_->Append(l, 0, std::vector<int32_t>{0, 1, 2, 3, 4}));
  }
  ASSERT_OK(cache_->Compact(0, std::vector<int32_t>{0, 3}));
  for (int64_t l = 0; l < kLayers; ++l) {
    EXPECT_EQ(cache_->length(l, 0), 2);
    EXPECT_EQ(K(l, 0, 1), 1000.0f * l + 3);
  }
}

// A half-precision cache holds half the bytes of an F32 one, and Compact moves its rows through
// scratch of the same dtype (entry e of slot 1 holds 16 + e in every element: exact in F16 and
// BF16).
TEST(KvCacheLayerScratchTest, LayersShareOneStorageButNotTheirBookkeeping) {
  ASSERT_OK_AND_ASSIGN(auto backend, MakeBackend(BackendKind::kCpu));
  ASSERT_OK_AND_ASSIGN(auto full, KvCache::Create(backend.get(), 4, kKvHeads, kHeadDim, kSlots,
                                                  kCapacity, DType::kF32));
  ASSERT_OK_AND_ASSIGN(auto scratch, KvCache::CreateLayerScratch(backend.get(), 4, kKvHeads,
                                                                  kHeadDim, kSlots, kCapacity,
                                                                  DType::kF32));
  EXPECT_EQ(scratch->layers(), 4);
  EXPECT_TRUE(scratch->shared_storage());
  EXPECT_EQ(scratch->bytes() * 4, full->bytes());
  for (int64_t l = 1; l < 4; ++l) {
    EXPECT_EQ(scratch->k(l).data, scratch->k(0).data);
    EXPECT_EQ(scratch->v(l).data, scratch->v(0).data);
    EXPECT_NE(full->k(l).data, full->k(0).data);
  }
  ASSERT_OK_AND_ASSIGN(int32_t first, scratch->Append(2, 1, std::vector<int32_t>{3, 4}));
  EXPECT_EQ(first, 0);
  EXPECT_EQ(scratch->length(2, 1), 2);
  EXPECT_EQ(scratch->length(1, 1), 0);  // lengths stay per layer
  const absl::Status compact = scratch->Compact(2, 1, std::vector<int32_t>{1});
  EXPECT_EQ(compact.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(compact.message().find("share one storage"), std::string::npos) << compact;
}

TEST(KvCacheDTypeTest, HalfPrecisionCachesCompactAndCountTheirBytes) {
  ASSERT_OK_AND_ASSIGN(auto backend, MakeBackend(BackendKind::kCpu));
  for (const DType dtype : {DType::kBF16, DType::kF16}) {
    SCOPED_TRACE(DTypeName(dtype));
    ASSERT_OK_AND_ASSIGN(auto cache, KvCache::Create(backend.get(), kLayers, kKvHeads, kHeadDim,
                                                     kSlots, kCapacity, dtype));
    EXPECT_EQ(cache->dtype(), dtype);
    EXPECT_EQ(cache->k(0).dtype, dtype);
    EXPECT_EQ(cache->bytes(), static_cast<size_t>(kLayers * 2 * kSlots * kCapacity * kRow * 2));
    auto widen = [&](uint16_t w) { return dtype == DType::kBF16 ? Bf16ToFloat(w) : F16ToFloat(w); };
    for (int64_t l = 0; l < kLayers; ++l) {
      uint16_t* k = cache->k(l).as<uint16_t>() + kCapacity * kRow;  // slot 1
      for (int64_t e = 0; e < kCapacity; ++e) {
        const float value = 16.0f + e;
        for (int64_t d = 0; d < kRow; ++d) {
          k[e * kRow + d] = dtype == DType::kBF16 ? FloatToBf16(value) : FloatToF16(value);
        }
      }
      ASSERT_OK(cache->Append(l, 1, std::vector<int32_t>{0, 1, 2, 3, 4, 5}));
    }
    ASSERT_OK(cache->Compact(1, std::vector<int32_t>{2, 5}));
    for (int64_t l = 0; l < kLayers; ++l) {
      const uint16_t* k = cache->k(l).as<const uint16_t>() + kCapacity * kRow;
      for (int64_t d = 0; d < kRow; ++d) {
        EXPECT_EQ(widen(k[d]), 18.0f);
        EXPECT_EQ(widen(k[kRow + d]), 21.0f);
        EXPECT_EQ(widen(k[2 * kRow + d]), 18.0f);  // beyond the length: untouched
      }
    }
  }
  ModelConfig config;
  config.num_hidden_layers = 3;
  config.num_key_value_heads = 2;
  config.head_dim = 8;
  EXPECT_EQ(KvCache::BytesPerToken(config, DType::kF32), 3u * 2 * 8 * 2 * 4);
  EXPECT_EQ(KvCache::BytesPerToken(config, DType::kBF16), 3u * 2 * 8 * 2 * 2);
  EXPECT_EQ(KvCache::Create(backend.get(), 1, 1, 4, 1, 4, DType::kI32).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tessera
