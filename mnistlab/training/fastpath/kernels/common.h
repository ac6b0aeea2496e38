// What the kernels' sources share: 16-lane float vectors and a parallel loop over XLA's intra-op threads.
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
static constexpr int64_t kLanes = 16;        // samples per vector: the batch is padded to a multiple
static constexpr int64_t kChunk = 32;        // samples per chunk of the sparse products' lists
static constexpr int64_t kMaxPool = 15;      // the largest pooling window conv_pool takes (its argmax is a byte)
static constexpr int64_t kKernelSizes[] = {3, 5};  // square kernel sizes whose gradients are built

typedef float v16 __attribute__((vector_size(kLanes * sizeof(float))));

static inline v16 load(const float* p) {
  v16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

static inline void store(float* p, v16 v) { std::memcpy(p, &v, sizeof v); }

// The number of blocks of `per` that cover `count`.
static inline int64_t blocks(int64_t count, int64_t per) { return (count + per - 1) / per; }

static inline float hsum(v16 v) {
  float s = 0;
  for (int l = 0; l < kLanes; ++l) s += v[l];
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
