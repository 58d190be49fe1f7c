// th.txt / sdc.txt and the dense tables (shared/specs/top_theta.md §2 "Files", §7.1, §7.2,
// §8.6): lossless read-write, refused lines, nearest-bin lookup with ties to the smaller n,
// the model checks (heads, layers, k), and slices at tp 2 x pp 2 equal to the global table's.
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "methods/top_theta/threshold_safetensors.h"
#include "methods/top_theta/threshold_table.h"

#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "methods/top_theta/top_theta_method.h"

namespace tessera::top_theta {
namespace {

// Lines as the reference writes them (Python floats), in its order (not sorted).
constexpr char kReference[] =
    "L1_H0:5 0.000225390625 4 64\n"
    "L1_H0:9 2.5e-05 1 64\n"
    "L0_H1:5 -1.7976931348623157e+308 3 32\n"
    "L0_H0:5 0.1 2 32\n"
    "L0_H0:7 0.30000000000000004 2 32\n"
    "L0_H1:7 1e-07 1 32\n"
    "L1_H1:5 3.0 7 64\n"
    "L1_H1:9 12345.678901234567 7 64\n";

TEST(ThresholdFileTest, ReadAndWriteBackIsLossless) {
  auto bins = ParseBins(kReference, "th.txt", BinFile::kThresholds);
  ASSERT_TRUE(bins.ok()) << bins.status();
  EXPECT_EQ(FormatBins(*bins, BinFile::kThresholds), kReference);
  ASSERT_EQ(bins->size(), 8u);
  EXPECT_EQ((*bins)[0].layer, 1);
  EXPECT_EQ((*bins)[0].n, 5);
  EXPECT_DOUBLE_EQ((*bins)[0].value, 0.000225390625);
  EXPECT_EQ((*bins)[0].samples, 4);
  EXPECT_EQ((*bins)[0].k, 64);
  // Values made here are written in the shortest text that reads back to the same double.
  for (CalibratedBin& b : *bins) b.text.clear();
  auto again = ParseBins(FormatBins(*bins, BinFile::kThresholds), "th.txt", BinFile::kThresholds);
  ASSERT_TRUE(again.ok());
  for (size_t i = 0; i < bins->size(); ++i) EXPECT_EQ((*again)[i].value, (*bins)[i].value);
  const std::string sdc = "L0_H0:5 0.5 2\nL0_H1:5 0.25 2\n";
  auto mass = ParseBins(sdc, "sdc.txt", BinFile::kMissingMass);
  ASSERT_TRUE(mass.ok()) << mass.status();
  EXPECT_EQ(FormatBins(*mass, BinFile::kMissingMass), sdc);
}

TEST(ThresholdFileTest, BadLinesNameTheFileAndLine) {
  auto error = [](const std::string& text) {
    return std::string(ParseBins(text, "cal/th.txt", BinFile::kThresholds).status().message());
  };
  EXPECT_NE(error("L0_H0:5 0.1 2 32\nL0_H0 0.1 2 32\n").find("cal/th.txt:2: expected"),
            std::string::npos);
  EXPECT_NE(error("L0_H0:5 0.1 2\n").find("cal/th.txt:1"), std::string::npos);  // truncated
  EXPECT_NE(error("L0_H0:5 nan 2 32\n").find("not finite"), std::string::npos);
  EXPECT_NE(error("L0_H0:5 0.1 0 32\n").find(">= 1"), std::string::npos);
  EXPECT_NE(error("L0_H0:5 0.1 2 0\n").find(">= 1"), std::string::npos);
  EXPECT_NE(error("L0_H0:5 0.1 2 32\nL0_H0:5 0.2 2 32\n").find("appears twice"), std::string::npos);
  EXPECT_NE(error("L0_H0:5 0.1 2 32\nL0_H1:5 0.2 2 16\n").find("one k"), std::string::npos);
  EXPECT_NE(error("L0_H0:0 0.1 2 32\n").find("expected"), std::string::npos);
  EXPECT_NE(error(std::string("L0_H0:5 0.1 2 32\n\x01\x02garbage")).find(":2"), std::string::npos);
}

TEST(ThresholdTableTest, NearestBinWithTiesToTheSmallerN) {
  // Head 0 has bins 5 and 9: n = 7 is equally far from both and takes 5; 8 takes 9; lengths
  // outside [5, 9] take the nearest end.
  auto bins = ParseBins("L0_H0:5 1.0 1 4\nL0_H0:9 2.0 1 4\nL0_H1:6 3.0 1 4\n", "th.txt",
                        BinFile::kThresholds);
  ASSERT_TRUE(bins.ok());
  auto table = ThresholdTable::Build(*bins, "th.txt", BinFile::kThresholds, 2, {4});
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(table->n_lo(), 5);
  EXPECT_EQ(table->n_hi(), 9);
  const float expected[] = {1, 1, 1, 1, 1, 1, 2, 2};  // n = 2 .. 9
  for (int n = 2; n <= 9; ++n) EXPECT_EQ(table->At(0, 0, n), expected[n - 2]) << n;
  EXPECT_EQ(table->At(0, 0, 100), 2.0f);
  EXPECT_EQ(table->At(0, 1, 1), 3.0f);
  EXPECT_EQ(table->At(0, 1, 9), 3.0f);
}

TEST(ThresholdTableTest, AFileForAnotherModelIsRefused) {
  auto bins = ParseBins(kReference, "cal/th.txt", BinFile::kThresholds);
  ASSERT_TRUE(bins.ok());
  auto error = [&](int64_t heads, std::vector<int32_t> k) {
    return std::string(ThresholdTable::Build(*bins, "cal/th.txt", BinFile::kThresholds, heads, k)
                           .status()
                           .message());
  };
  EXPECT_EQ(error(2, {32, 64}), "");
  EXPECT_NE(error(1, {32, 64}).find("has 1 attention heads"), std::string::npos);
  EXPECT_NE(error(2, {32}).find("the model has 1 layers"), std::string::npos);
  EXPECT_NE(error(2, {32, 16}).find("calibrated for k = 64, but this run's k for it is 16"),
            std::string::npos);
  EXPECT_NE(error(2, {0, 64}).find("k is 0"), std::string::npos);
  EXPECT_NE(error(4, {32, 64}).find("layer 0 head 2 has no calibrated bin"), std::string::npos);
  EXPECT_NE(error(2, {32, 64, 8}).find("layer 2 head 0 has no calibrated bin"), std::string::npos);
}

TEST(ThresholdTableTest, SlicesAtTp2Pp2AreTheGlobalTable) {
  // 4 layers x 4 heads, sparse bins; stage p holds layers [2p, 2p + 2), tp rank r heads
  // [2r, 2r + 2).
  std::vector<CalibratedBin> bins;
  for (int l = 0; l < 4; ++l) {
    for (int h = 0; h < 4; ++h) {
      for (int n : {10 + h, 20, 31 - l}) {
        CalibratedBin b;
        b.layer = l;
        b.head = h;
        b.n = n;
        b.value = l * 100 + h * 10 + n * 0.5;
        b.samples = 1;
        b.k = 8;
        bins.push_back(b);
      }
    }
  }
  auto table = ThresholdTable::Build(bins, "th.txt", BinFile::kThresholds, 4, {8, 8, 8, 8});
  ASSERT_TRUE(table.ok()) << table.status();
  for (int stage = 0; stage < 2; ++stage) {
    for (int rank = 0; rank < 2; ++rank) {
      for (int l = 2 * stage; l < 2 * stage + 2; ++l) {
        const std::vector<float> slice = table->Slice(l, 2 * rank, 2 * rank + 2);
        ASSERT_EQ(static_cast<int64_t>(slice.size()), 2 * table->bins());
        for (int h = 0; h < 2; ++h) {
          for (int64_t c = 0; c < table->bins(); ++c) {
            EXPECT_EQ(slice[h * table->bins() + c], table->At(l, 2 * rank + h, table->n_lo() + c));
          }
        }
      }
    }
  }
  // Every calibrated bin is exact in its slice.
  for (const CalibratedBin& b : bins) {
    EXPECT_EQ(table->At(b.layer, b.head, b.n), static_cast<float>(b.value));
  }
}

TEST(ThresholdSafetensorsTest, RoundTripAndRefusals) {
  auto bins = ParseBins(kReference, "th.txt", BinFile::kThresholds);
  ASSERT_TRUE(bins.ok());
  SortBins(*bins);
  ThresholdArchive a;
  a.layers = 2;
  a.heads = 2;
  a.placement = "PRE_SOFTMAX";
  a.layer_k = {32, 64};
  a.thresholds = *bins;
  a.missing_mass = {bins->begin(), bins->begin() + 2};
  for (CalibratedBin& b : a.missing_mass) b.k = 0;
  const std::string dir = std::filesystem::temp_directory_path() /
                          ("tessera_thresholds_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/thresholds.safetensors";
  ASSERT_TRUE(WriteThresholdSafetensors(path, a).ok());
  auto back = ReadThresholdSafetensors(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->layers, 2);
  EXPECT_EQ(back->heads, 2);
  EXPECT_EQ(back->placement, "PRE_SOFTMAX");
  EXPECT_EQ(back->layer_k, a.layer_k);
  ASSERT_EQ(back->thresholds.size(), a.thresholds.size());
  for (size_t i = 0; i < a.thresholds.size(); ++i) {
    const CalibratedBin &x = a.thresholds[i], &y = back->thresholds[i];
    EXPECT_EQ(std::tie(x.layer, x.head, x.n, x.samples, x.k), std::tie(y.layer, y.head, y.n, y.samples, y.k));
    EXPECT_EQ(static_cast<float>(x.value), y.value);  // stored as F32
  }
  EXPECT_EQ(back->missing_mass.size(), 2u);
  // A truncated file and another safetensors file are refused, naming the file.
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << bytes.substr(0, bytes.size() - 10);
  }
  EXPECT_NE(std::string(ReadThresholdSafetensors(path).status().message()).find(path),
            std::string::npos);
  EXPECT_NE(std::string(ReadThresholdSafetensors("models/tessera-code-tiny/model.safetensors")
                            .status()
                            .message())
                .find("is not a Top-theta threshold file"),
            std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(LayerKsTest, DefaultsOverridesAndRange) {
  config::SparseAttentionSettings s;
  auto k = LayerKs(s, 3);
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(*k, (std::vector<int32_t>{256, 256, 256}));
  s.set_k(16);
  auto* lk = s.add_layer_k();
  lk->set_layer(1);
  lk->set_k(0);
  k = LayerKs(s, 3);
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(*k, (std::vector<int32_t>{16, 0, 16}));
  lk->set_layer(3);
  EXPECT_NE(std::string(LayerKs(s, 3).status().message()).find("layer_k[0].layer: 3"),
            std::string::npos);
}

}  // namespace
}  // namespace tessera::top_theta
