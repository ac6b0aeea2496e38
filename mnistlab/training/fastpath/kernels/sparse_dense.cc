// The two products of a dense layer whose input is mostly zeros, as XLA FFI
// custom calls for the CPU: the forward product y = x @ w and the kernel's
// gradient dw = x^T @ dy, both over the nonzero entries of x.
//
// Why: the notebook DNN's first layer takes raw pixels, and 81% of MNIST's
// pixels are 0. Its two products (784x400 weights, batch 64) took about half
// of a training step through XLA's dense dots; over the nonzero pixels they
// are a fifth of the arithmetic.
//
// How: the inputs go in pairs (pixels 2g and 2g+1, mostly both zero or both
// not). The forward call lists, for each chunk of 32 samples and each pair,
// the samples where the pair is not all zero, with the pair's two values; the
// gradient call reuses those lists. The forward product adds, pair by pair,
// the pair's two weight rows (a block of their columns, in registers) into the
// rows of the listed samples, in a small buffer that stays in the L1 cache.
// The gradient sums, pair by pair, the listed samples' rows of dy (a block of
// columns, in L1) into two rows of registers. On this kind of machine the
// loads are the limit; a pair halves them per multiply-add.
//
// Each output element is one sum over its inputs (for y) or samples (for dw) in
// increasing order, so results do not depend on how the work is split over
// threads. A zero of x adds an exact zero, so a sum equals the sum of the
// nonzero terms, except that a zero meeting an inf or NaN gives NaN, as in a
// dense product.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "common.h"

// Vectors of kVec columns per block of output columns: a block's weights, two rows of them, stay in
// registers (16 of AVX-512's 32, 10 of AVX2's 16).
static constexpr int kBlock = kWide ? 8 : 5;

// The lists of pairs, in three buffers of the forward call's results:
//   start (chunks, pairs + 1): chunk c, pair g holds entries [start[c][g], start[c][g + 1]);
//   index (n * pairs):          each entry's sample, increasing within a chunk's pair;
//   vals (n * pairs, 2):        the sample's values at inputs 2g and 2g + 1.
struct Pairs {
  int64_t n, k, pairs;
  int32_t* start;
  int32_t* index;
  float* vals;

  int64_t chunks() const { return blocks(n, kChunk); }
  const int32_t* bounds(int64_t c) const { return start + c * (pairs + 1); }
};

// Lists chunk c's entries, which live in index/vals from c * kChunk * pairs on.
static void list_pairs(const float* x, const Pairs& z, int64_t c) {
  const int64_t k = z.k, pairs = z.pairs, s0 = c * kChunk, s1 = std::min(z.n, s0 + kChunk);
  // The chunk's entries sample by sample first, branch-free (a mispredicted branch per pixel would cost
  // more than the product); then sorted by pair with a counting sort, which keeps the samples in order.
  thread_local std::vector<int32_t> row_pair, row_start;
  thread_local std::vector<uint64_t> row_vals;  // a pair's two floats, as stored
  row_pair.resize(kChunk * pairs + 8);  // + 8: a whole vector may be stored past the last entry
  row_vals.resize(kChunk * pairs + 8);
  row_start.resize(kChunk + 1);
  int64_t at = 0;
  for (int64_t s = s0; s < s1; ++s) {
    row_start[s - s0] = (int32_t)at;
    const float* row = x + s * k;
    int64_t g = 0;
#ifdef __AVX512F__
    const __m512i lanes = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
    for (; 2 * g + 16 <= k; g += 8) {
      // A pair is kept when its 64 bits are not all zero (a -0.0 is kept too, and adds nothing).
      const __m512i v = _mm512_loadu_si512(row + 2 * g);
      const __mmask8 kept = _mm512_test_epi64_mask(v, v);
      _mm512_storeu_si512(row_vals.data() + at, _mm512_maskz_compress_epi64(kept, v));
      _mm256_storeu_si256((__m256i*)(row_pair.data() + at),
                          _mm512_maskz_cvtepi64_epi32((__mmask8)-1, _mm512_maskz_compress_epi64(
                              kept, _mm512_add_epi64(_mm512_set1_epi64(g), lanes))));
      at += __builtin_popcount(kept);
    }
#endif
    for (; g < pairs; ++g) {
      const float a = row[2 * g], b = 2 * g + 1 < k ? row[2 * g + 1] : 0.0f;
      float both[2] = {a, b};
      row_pair[at] = (int32_t)g;
      std::memcpy(&row_vals[at], both, sizeof both);
      at += !(a == 0.0f && b == 0.0f);
    }
  }
  row_start[s1 - s0] = (int32_t)at;
  int32_t* start = z.start + c * (pairs + 1);
  std::fill(start, start + pairs + 1, 0);
  for (int64_t e = 0; e < at; ++e) ++start[row_pair[e] + 1];
  start[0] = (int32_t)(c * kChunk * pairs);
  for (int64_t g = 0; g < pairs; ++g) start[g + 1] += start[g];
  thread_local std::vector<int32_t> cursor;
  cursor.assign(start, start + pairs);
  for (int64_t s = s0; s < s1; ++s) {
    for (int64_t e = row_start[s - s0]; e < row_start[s - s0 + 1]; ++e) {
      const int32_t to = cursor[row_pair[e]]++;
      z.index[to] = (int32_t)s;
      std::memcpy(z.vals + 2 * to, &row_vals[e], 2 * sizeof(float));
    }
  }
}

// Columns [j0, j0 + kVec * vectors) of the output, or when vectors is 0, the columns past the last whole vector.
struct Block {
  int64_t j0, vectors;
};

static int64_t block_count(int64_t m) { return blocks(m / kVec, kBlock) + (m % kVec ? 1 : 0); }

static Block block(int64_t index, int64_t m) {
  const int64_t whole = m / kVec;
  if (index * kBlock < whole) return Block{index * kBlock * kVec, std::min<int64_t>(kBlock, whole - index * kBlock)};
  return Block{whole * kVec, 0};
}

// y[chunk c's samples, j0, j0 + kVec V) = sum over inputs p (in increasing order) of x[s, p] * w[p, j0, ...)
template <int V>
static void forward_block(const Pairs& z, const float* w, float* y, int64_t m, int64_t c, int64_t j0) {
  alignas(64) float sums[kChunk * kVec * V];  // the chunk's rows of this block: in L1
  std::memset(sums, 0, sizeof sums);
  const int32_t* bounds = z.bounds(c);
  const int64_t s0 = c * kChunk;
  for (int64_t g = 0; g < z.pairs; ++g) {
    if (bounds[g] == bounds[g + 1]) continue;
    vf w0[V], w1[V];
    const float* second = 2 * g + 1 < z.k ? w + (2 * g + 1) * m + j0 : nullptr;
    for (int b = 0; b < V; ++b) {
      w0[b] = load(w + 2 * g * m + j0 + kVec * b);
      w1[b] = second ? load(second + kVec * b) : vf{};
    }
    for (int64_t e = bounds[g]; e < bounds[g + 1]; ++e) {
      float* out = sums + (z.index[e] - s0) * kVec * V;
      const float a = z.vals[2 * e], bv = z.vals[2 * e + 1];
      for (int b = 0; b < V; ++b) store(out + kVec * b, (load(out + kVec * b) + a * w0[b]) + bv * w1[b]);
    }
  }
  for (int64_t s = s0; s < std::min(z.n, s0 + kChunk); ++s)
    std::memcpy(y + s * m + j0, sums + (s - s0) * kVec * V, kVec * V * sizeof(float));
}

static void forward_columns(const Pairs& z, const float* w, float* y, int64_t m, int64_t c, int64_t j0) {
  const int32_t* bounds = z.bounds(c);
  for (int64_t s = c * kChunk; s < std::min(z.n, (c + 1) * kChunk); ++s)
    for (int64_t j = j0; j < m; ++j) y[s * m + j] = 0.0f;
  for (int64_t g = 0; g < z.pairs; ++g) {
    for (int64_t e = bounds[g]; e < bounds[g + 1]; ++e) {
      for (int64_t j = j0; j < m; ++j) {
        float& out = y[z.index[e] * m + j];
        out += z.vals[2 * e] * w[2 * g * m + j];
        if (2 * g + 1 < z.k) out += z.vals[2 * e + 1] * w[(2 * g + 1) * m + j];
      }
    }
  }
}

// dw[p, j0, j0 + kVec V) = sum over samples s (in increasing order) of x[s, p] * dy[s, j0, ...), for the
// inputs of pairs [g0, g1)
template <int V>
static void grad_block(const Pairs& z, const float* dy, float* dw, int64_t m, int64_t g0, int64_t g1,
                       int64_t j0) {
  for (int64_t g = g0; g < g1; ++g) {
    vf acc0[V], acc1[V];
    for (int b = 0; b < V; ++b) acc0[b] = acc1[b] = vf{};
    for (int64_t c = 0; c < z.chunks(); ++c) {
      const int32_t* bounds = z.bounds(c);
      for (int64_t e = bounds[g]; e < bounds[g + 1]; ++e) {
        const float* d = dy + z.index[e] * m + j0;
        const float a = z.vals[2 * e], bv = z.vals[2 * e + 1];
        for (int b = 0; b < V; ++b) {
          const vf dv = load(d + kVec * b);
          acc0[b] += a * dv;
          acc1[b] += bv * dv;
        }
      }
    }
    for (int b = 0; b < V; ++b) store(dw + 2 * g * m + j0 + kVec * b, acc0[b]);
    if (2 * g + 1 < z.k)
      for (int b = 0; b < V; ++b) store(dw + (2 * g + 1) * m + j0 + kVec * b, acc1[b]);
  }
}

static void grad_columns(const Pairs& z, const float* dy, float* dw, int64_t m, int64_t g0, int64_t g1,
                         int64_t j0) {
  for (int64_t g = g0; g < g1; ++g) {
    for (int64_t half = 0; half < 2 && 2 * g + half < z.k; ++half) {
      for (int64_t j = j0; j < m; ++j) {
        float acc = 0.0f;
        for (int64_t c = 0; c < z.chunks(); ++c)
          for (int64_t e = z.bounds(c)[g]; e < z.bounds(c)[g + 1]; ++e)
            acc += z.vals[2 * e + half] * dy[z.index[e] * m + j];
        dw[(2 * g + half) * m + j] = acc;
      }
    }
  }
}

// Pairs over the lists' buffers, or an error when their sizes disagree with (n, k).
template <typename Start, typename Index, typename Vals>
static ffi::Error pairs_of(Start& start, Index& index, Vals& vals, int64_t n, int64_t k, Pairs* z) {
  *z = Pairs{n, k, (k + 1) / 2, start.typed_data(), index.typed_data(), vals.typed_data()};
  if ((int64_t)start.element_count() != z->chunks() * (z->pairs + 1)
      || (int64_t)index.element_count() != n * z->pairs || (int64_t)vals.element_count() != 2 * n * z->pairs)
    return ffi::Error::InvalidArgument("the lists' sizes do not match x");
  return ffi::Error::Success();
}

static ffi::Error SparseDenseForwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                                         ffi::ResultBuffer<ffi::F32> y, ffi::ResultBuffer<ffi::S32> start,
                                         ffi::ResultBuffer<ffi::S32> index, ffi::ResultBuffer<ffi::F32> vals) {
  auto xd = x.dimensions(), wd = w.dimensions();
  if (xd.size() != 2 || wd.size() != 2 || xd[1] != wd[0])
    return ffi::Error::InvalidArgument("expected x (N, K) and w (K, M)");
  const int64_t m = wd[1];
  Pairs z;
  if (auto e = pairs_of(*start, *index, *vals, xd[0], xd[1], &z); e.failure()) return e;
  const float* xp = x.typed_data();
  const float* wp = w.typed_data();
  float* yp = y->typed_data();
  parallel_for(pool, z.chunks(), [&z, xp](int64_t c) { list_pairs(xp, z, c); });
  const int64_t column_blocks = block_count(m);
  parallel_for(pool, z.chunks() * column_blocks, [&z, wp, yp, m, column_blocks](int64_t unit) {
    const int64_t c = unit / column_blocks;
    const Block b = block(unit % column_blocks, m);
    switch (b.vectors) {
#define CASE(V) case V: forward_block<V>(z, wp, yp, m, c, b.j0); break;
      CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8)
#undef CASE
      default: forward_columns(z, wp, yp, m, c, b.j0); break;
    }
  });
  return ffi::Error::Success();
}

static constexpr int64_t kPairsPerUnit = 49;  // MNIST's 392 pairs in 8 units of work per block

static ffi::Error SparseDenseKernelGradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::S32> start,
                                            ffi::Buffer<ffi::S32> index, ffi::Buffer<ffi::F32> vals,
                                            ffi::Buffer<ffi::F32> dy,
                                            ffi::ResultBuffer<ffi::F32> dw) {
  auto gd = dy.dimensions(), wd = dw->dimensions();
  if (gd.size() != 2 || wd.size() != 2 || gd[1] != wd[1])
    return ffi::Error::InvalidArgument("expected dy (N, M) and dw (K, M)");
  const int64_t m = gd[1];
  Pairs z;
  if (auto e = pairs_of(start, index, vals, gd[0], wd[0], &z); e.failure()) return e;
  const float* gp = dy.typed_data();
  float* dwp = dw->typed_data();
  const int64_t column_blocks = block_count(m), parts = blocks(z.pairs, kPairsPerUnit);
  parallel_for(pool, column_blocks * parts, [&z, gp, dwp, m, parts](int64_t unit) {
    const Block b = block(unit / parts, m);
    const int64_t g0 = unit % parts * kPairsPerUnit, g1 = std::min(z.pairs, g0 + kPairsPerUnit);
    switch (b.vectors) {
#define CASE(V) case V: grad_block<V>(z, gp, dwp, m, g0, g1, b.j0); break;
      CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8)
#undef CASE
      default: grad_columns(z, gp, dwp, m, g0, g1, b.j0); break;
    }
  });
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(SparseDenseForward, SparseDenseForwardImpl,
                              two_tensors()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(SparseDenseKernelGrad, SparseDenseKernelGradImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
