// ScratchArena: scratch grows, and a buffer that captured work may hold is never freed while
// that work lives (the CUDA backend's graph replays depended on freed scratch before).
#include "kernels/scratch_arena.h"

#include <cstdint>
#include <set>

#include "absl/strings/str_cat.h"

#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

// Heap memory with a record of what is live.
struct Heap {
  std::set<void*> live;
  int64_t allocations = 0;
  ScratchArena Arena(int kinds) {
    return ScratchArena(
        kinds,
        [this](size_t bytes, absl::string_view) -> absl::StatusOr<void*> {
          void* p = ::operator new(bytes);
          live.insert(p);
          ++allocations;
          return p;
        },
        [this](void* p) {
          if (p == nullptr) return;
          live.erase(p);
          ::operator delete(p);
        });
  }
};

TEST(ScratchArenaTest, GrowsByAQuarterAndKeepsTheBufferForSmallerRequests) {
  Heap heap;
  {
    ScratchArena arena = heap.Arena(2);
    ASSERT_OK_AND_ASSIGN(void* a, arena.Get(0, 1000, "op", false));
    EXPECT_EQ(arena.bytes(0), 1000u);
    EXPECT_EQ(arena.generation(), 1u);
    ASSERT_OK_AND_ASSIGN(void* same, arena.Get(0, 400, "op", false));
    EXPECT_EQ(same, a);
    EXPECT_EQ(arena.generation(), 1u);
    ASSERT_OK_AND_ASSIGN(void* grown, arena.Get(0, 1001, "op", false));
    EXPECT_EQ(arena.bytes(0), 1250u);  // at least a quarter more
    EXPECT_EQ(arena.generation(), 2u);
    EXPECT_EQ(heap.live.count(a), 0u) << "no captured work: the old buffer is freed at once";
    EXPECT_EQ(heap.live.count(grown), 1u);
    ASSERT_OK(arena.Get(1, 10, "other", false).status());  // kinds are independent
    EXPECT_EQ(arena.bytes(0), 1250u);
    EXPECT_EQ(heap.live.size(), 2u);
  }
  EXPECT_TRUE(heap.live.empty()) << "the arena frees everything it holds";
}

TEST(ScratchArenaTest, BuffersThatLiveCapturesMayUseAreRetiredNotFreed) {
  Heap heap;
  {
    ScratchArena arena = heap.Arena(1);
    ASSERT_OK_AND_ASSIGN(void* captured, arena.Get(0, 512, "Attention", false));
    arena.CaptureCreated();  // a graph recorded `captured`
    arena.CaptureCreated();  // and a second one
    ASSERT_OK_AND_ASSIGN(void* grown, arena.Get(0, 4096, "Attention", false));
    EXPECT_NE(grown, captured);
    EXPECT_EQ(heap.live.count(captured), 1u) << "a graph could still replay with it";
    EXPECT_EQ(arena.retired_bytes(), 512u);
    ASSERT_OK(arena.Get(0, 8192, "Attention", false).status());
    EXPECT_EQ(arena.retired_bytes(), 512u + 4096u);
    arena.CaptureDestroyed();
    EXPECT_EQ(heap.live.count(captured), 1u) << "one graph is still alive";
    arena.CaptureDestroyed();
    EXPECT_EQ(heap.live.count(captured), 0u) << "the last graph released the retired buffers";
    EXPECT_EQ(heap.live.count(grown), 0u);
    EXPECT_EQ(arena.retired_bytes(), 0u);
    EXPECT_EQ(heap.live.size(), 1u);  // the current buffer
  }
  EXPECT_TRUE(heap.live.empty());
}

TEST(ScratchArenaTest, GrowingDuringCaptureIsRefusedWithAdvice) {
  Heap heap;
  ScratchArena arena = heap.Arena(1);
  ASSERT_OK(arena.Get(0, 64, "Gemm", false).status());
  ASSERT_OK(arena.Get(0, 64, "Gemm", true).status());  // fits: fine while capturing
  const absl::Status s = arena.Get(0, 65, "Gemm (activations)", true).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("Gemm (activations) needs 65 bytes"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("eagerly"), absl::string_view::npos) << s;
  EXPECT_EQ(heap.allocations, 1);
}

TEST(ScratchArenaTest, AFailedAllocationKeepsTheOldBuffer) {
  int calls = 0;
  void* first = nullptr;
  ScratchArena arena(
      1,
      [&](size_t bytes, absl::string_view what) -> absl::StatusOr<void*> {
        if (++calls > 1) return absl::ResourceExhaustedError(absl::StrCat("no memory for ", what));
        first = ::operator new(bytes);
        return first;
      },
      [](void* p) { ::operator delete(p); });
  ASSERT_OK(arena.Get(0, 100, "TopK", false).status());
  const absl::Status s = arena.Get(0, 1000, "TopK", false).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_NE(s.message().find("the scratch of TopK"), absl::string_view::npos) << s;
  EXPECT_EQ(arena.bytes(0), 100u);
  EXPECT_EQ(arena.generation(), 1u);
  ASSERT_OK_AND_ASSIGN(void* again, arena.Get(0, 50, "TopK", false));
  EXPECT_EQ(again, first);
}

}  // namespace
}  // namespace tessera
