// What the kernels' sources share: float vectors one register wide and a parallel loop over XLA's
// intra-op threads.
//
// Work is split over XLA's intra-op threads: chunks are claimed from an atomic
// counter by the calling thread and the helpers it schedules alike, so the
// caller never waits on a chunk nobody has started (no deadlock when the pool
// is busy).
#pragma once
#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// The constants the Python side relies on (kernels/ffi.py); exports.cc exports them, and the loader
// refuses a library whose values differ from Python's.
static constexpr int64_t kLanes = 16;        // the batch is padded to a multiple of this many samples
static constexpr int64_t kChunk = 32;        // samples per chunk of the sparse products' lists
static constexpr int64_t kMaxPool = 15;      // the largest pooling window conv_pool takes (its argmax is a byte)
static constexpr int64_t kKernelSizes[] = {3, 5};  // square kernel sizes whose gradients are built

// Samples (or columns) per vector: one register of the widest kind the CPU has. With AVX2 alone, 16-lane
// vectors took two registers each: the register tiles sized for AVX-512's 32 registers spilled, and the
// kernels ran at half XLA's speed (2-core AMD EPYC, Zen 2, 2026-12-04). kLanes is a multiple of both.
#ifdef __AVX512F__
static constexpr int64_t kVec = 16;
#else
static constexpr int64_t kVec = 8;
#endif
static constexpr bool kWide = kVec == 16;  // what the sources size their register tiles by
static_assert(kLanes % kVec == 0, "the batch padding must be whole vectors");

typedef float vf __attribute__((vector_size(kVec * sizeof(float))));

static inline vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

static inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }

// The start of the handlers' bindings that take XLA's intra-op threads and two float tensors first.
static inline auto two_tensors() {
  return ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<ffi::Buffer<ffi::F32>>().Arg<ffi::Buffer<ffi::F32>>();
}

// The number of blocks of `per` that cover `count`.
static inline int64_t blocks(int64_t count, int64_t per) { return (count + per - 1) / per; }

static inline float hsum(vf v) {
  float s = 0;
  for (int l = 0; l < kVec; ++l) s += v[l];
  return s;
}

// Runs body(i) for i in [0, count) on the calling thread and XLA's pool.
static inline void parallel_for(ffi::ThreadPool& pool, int64_t count, std::function<void(int64_t)> body) {
  struct State {
    std::atomic<int64_t> next{0}, done{0};
    int64_t count;
    std::function<void(int64_t)> body;
  };
  auto state = std::make_shared<State>();
  state->count = count;
  state->body = std::move(body);
  auto work = [state] {
    for (int64_t i; (i = state->next.fetch_add(1)) < state->count;) {
      state->body(i);
      state->done.fetch_add(1, std::memory_order_release);
    }
  };
  int64_t helpers = std::min<int64_t>(pool.num_threads(), count) - 1;
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([work] { work(); });
  work();
  while (state->done.load(std::memory_order_acquire) < count) std::this_thread::yield();
}
