// File helpers for runtime and launcher tests: unique temporary directories, whole-file reads
// and writes, and a tiny safetensors writer (so tests can build the exact checkpoint, corrupt or
// not, that a case needs) plus a random tiny Llama checkpoint in Hugging Face tensor naming.
#ifndef TESSERA_TESTS_RUNTIME_TEST_FILES_H_
#define TESSERA_TESTS_RUNTIME_TEST_FILES_H_

#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace tessera::testing {

// A fresh directory under ::testing::TempDir(), removed with its contents on destruction.
class ScopedTempDir {
 public:
  ScopedTempDir() {
    static std::atomic<int> counter{0};
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : "tmp";
    for (char& c : name) {
      if (c == '/') c = '_';
    }
    path_ = std::filesystem::path(::testing::TempDir()) /
            ("tessera_" + name + "_" + std::to_string(::getpid()) + "_" +
             std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScopedTempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScopedTempDir(const ScopedTempDir&) = delete;
  ScopedTempDir& operator=(const ScopedTempDir&) = delete;

  std::string path() const { return path_.string(); }
  std::string Join(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

inline void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  ASSERT_TRUE(out) << "cannot write " << path;
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "short write to " << path;
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Copies the regular files of `src` (not recursive) into `dst`, which is created if needed.
inline void CopyDir(const std::string& src, const std::string& dst) {
  std::filesystem::create_directories(dst);
  for (const auto& entry : std::filesystem::directory_iterator(src)) {
    if (!entry.is_regular_file()) continue;
    std::filesystem::copy_file(entry.path(), std::filesystem::path(dst) / entry.path().filename(),
                               std::filesystem::copy_options::overwrite_existing);
  }
}

// Reads the JSON file at `path`, lets `edit` change it, and writes it back.
inline void EditJsonFile(const std::string& path,
                         const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json j = nlohmann::json::parse(ReadFile(path));
  edit(j);
  WriteFile(path, j.dump(2));
}

// The safetensors container: u64 little-endian header length, the header, the data.
inline std::string RawSafetensors(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

struct FakeTensor {
  std::string dtype;           // safetensors spelling: "F32", "F64", "I8", ...
  std::vector<int64_t> shape;
  std::string data;            // raw little-endian bytes
};

template <typename T>
std::string RawBytes(const std::vector<T>& values) {
  std::string out(values.size() * sizeof(T), '\0');
  if (!values.empty()) std::memcpy(out.data(), values.data(), out.size());
  return out;
}

inline FakeTensor F32Tensor(std::vector<int64_t> shape, const std::vector<float>& values) {
  return {"F32", std::move(shape), RawBytes(values)};
}

// A valid safetensors file holding `tensors`, data laid out in name order, the header padded
// with spaces to a multiple of 8 bytes (as the reference writer does).
inline std::string SafetensorsBytes(const std::map<std::string, FakeTensor>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  header["__metadata__"] = {{"format", "pt"}};
  std::string data;
  for (const auto& [name, t] : tensors) {
    header[name] = {{"dtype", t.dtype},
                    {"shape", t.shape},
                    {"data_offsets", {data.size(), data.size() + t.data.size()}}};
    data += t.data;
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text += ' ';
  return RawSafetensors(text, data);
}

// Shapes of a tiny Llama.
struct TinyLlamaDims {
  int64_t vocab = 64;
  int64_t hidden = 16;
  int64_t intermediate = 32;
  int64_t layers = 2;
  int64_t heads = 4;
  int64_t kv_heads = 2;
  int64_t head_dim = 4;
};

// config.json for `d` (tied embeddings off, no rope scaling).
inline nlohmann::json TinyLlamaConfig(const TinyLlamaDims& d) {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"hidden_size", d.hidden},
          {"intermediate_size", d.intermediate},
          {"num_hidden_layers", d.layers},
          {"num_attention_heads", d.heads},
          {"num_key_value_heads", d.kv_heads},
          {"head_dim", d.head_dim},
          {"vocab_size", d.vocab},
          {"max_position_embeddings", 256},
          {"rms_norm_eps", 1e-5},
          {"rope_theta", 10000.0},
          {"hidden_act", "silu"},
          {"tie_word_embeddings", false},
          {"bos_token_id", 1},
          {"eos_token_id", 2}};
}

// Every tensor LoadLlamaWeights reads for `d`, with N(0, scale^2) values (norm weights near 1).
inline std::map<std::string, FakeTensor> TinyLlamaTensors(const TinyLlamaDims& d, uint32_t seed,
                                                          float scale = 0.5f,
                                                          bool with_lm_head = true) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  auto random = [&](std::vector<int64_t> shape) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    std::vector<float> v(n);
    for (float& x : v) x = dist(gen);
    return F32Tensor(std::move(shape), v);
  };
  auto norm = [&](int64_t n) {
    std::vector<float> v(n);
    for (float& x : v) x = 1.0f + 0.1f * dist(gen);
    return F32Tensor({n}, v);
  };
  const int64_t q = d.heads * d.head_dim, kv = d.kv_heads * d.head_dim;
  std::map<std::string, FakeTensor> t;
  t["model.embed_tokens.weight"] = random({d.vocab, d.hidden});
  for (int64_t i = 0; i < d.layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    t[p + "input_layernorm.weight"] = norm(d.hidden);
    t[p + "self_attn.q_proj.weight"] = random({q, d.hidden});
    t[p + "self_attn.k_proj.weight"] = random({kv, d.hidden});
    t[p + "self_attn.v_proj.weight"] = random({kv, d.hidden});
    t[p + "self_attn.o_proj.weight"] = random({d.hidden, q});
    t[p + "post_attention_layernorm.weight"] = norm(d.hidden);
    t[p + "mlp.gate_proj.weight"] = random({d.intermediate, d.hidden});
    t[p + "mlp.up_proj.weight"] = random({d.intermediate, d.hidden});
    t[p + "mlp.down_proj.weight"] = random({d.hidden, d.intermediate});
  }
  t["model.norm.weight"] = norm(d.hidden);
  if (with_lm_head) t["lm_head.weight"] = random({d.vocab, d.hidden});
  return t;
}

// Writes config.json and model.safetensors for a tiny Llama into `dir`.
inline void WriteTinyLlama(const std::string& dir, const nlohmann::json& config,
                           const std::map<std::string, FakeTensor>& tensors) {
  std::filesystem::create_directories(dir);
  WriteFile((std::filesystem::path(dir) / "config.json").string(), config.dump(2));
  WriteFile((std::filesystem::path(dir) / "model.safetensors").string(), SafetensorsBytes(tensors));
}

}  // namespace tessera::testing

#endif  // TESSERA_TESTS_RUNTIME_TEST_FILES_H_
