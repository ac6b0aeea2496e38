// A stride-1 'valid' 3x3 convolution on (channels, height, width, batch) tensors by Winograd's minimal
// filtering F(2x2, 3x3) (Lavin and Gray, 2016), as an XLA FFI custom call for the CPU.
//
// Why: each 2x2 block of outputs costs 16 multiply-adds per input channel and filter instead of the
// direct sum's 36. The input's 4x4 tiles and the kernel are transformed (additions only: B^T d B and
// G g G^T), multiplied position by position and summed over the channels, and the 16 products
// transformed back (A^T m A). With the channels' transformed tiles in a small buffer the multiply-adds
// read consecutive memory, where the direct kernel (conv.cc) steps from channel to channel across the
// whole tensor: at batch 128 on a 2-core Zen 3, 2.4x the direct forward pass for 32 channels and
// filters on 14x14 outputs, 1.5x for 16 on 28x28, 1.6-1.7x its input gradients (BENCHMARKS.md; the
// tests: within 2e-6 of it).
//
// Each output element is one sum in a fixed order, so results do not depend on how the work is split
// over threads.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "common.h"
#include "conv_shapes.h"

// The convolved tensor (C, H, W, N), read as if zero-padded by `pad` on each side, and the block of the
// convolution's output computed: rows top.. and columns left.. of it, (O, OH, OW, N). The forward pass
// convolves the (padded) input, pad 0; the input's gradient the output's gradient, pad 2, with the
// kernel turned half a turn, cropped to the unpadded input (conv.cc's Crop).
struct WinoDims {
  int64_t c, h, w, n;        // the convolved tensor, N a multiple of 16
  int64_t pad;               // its implicit zero border
  int64_t o, oh, ow;         // the output: filters, height and width
  int64_t top, left;         // where the output lies in the whole convolution's
  int64_t x_at(int64_t ci, int64_t hi, int64_t wi) const { return ((ci * h + hi) * w + wi) * n; }
  int64_t y_at(int64_t oi, int64_t hi, int64_t wi) const { return ((oi * oh + hi) * ow + wi) * n; }
};

static constexpr int kWinoFilters = 6;  // filters per register tile (x kWinoVectors: 12 accumulators)
static constexpr int kWinoVectors = 2;  // vectors of samples per register tile

// U[p][c][o] = (G g G^T)[p] for the kernel g of input channel c and filter o, p = 4 * row + column:
// g = k[:, :, c, o] of k (3, 3, C, O), or with `turned`, k[2 - i, 2 - j, o, c] of k (3, 3, O, C) (the
// input's gradient: the kernel turned half a turn, its channels and filters swapped).
static void transform_kernel(const float* k, int64_t c, int64_t o, bool turned, float* u) {
  for (int64_t ci = 0; ci < c; ++ci) {
    for (int64_t oi = 0; oi < o; ++oi) {
      float g[3][3], t[4][3];
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j)
          g[i][j] = turned ? k[(((2 - i) * 3 + 2 - j) * o + oi) * c + ci] : k[((i * 3 + j) * c + ci) * o + oi];
      for (int j = 0; j < 3; ++j) {
        t[0][j] = g[0][j];
        t[1][j] = 0.5f * (g[0][j] + g[1][j] + g[2][j]);
        t[2][j] = 0.5f * (g[0][j] - g[1][j] + g[2][j]);
        t[3][j] = g[2][j];
      }
      for (int a = 0; a < 4; ++a) {
        const float row[4] = {t[a][0], 0.5f * (t[a][0] + t[a][1] + t[a][2]), 0.5f * (t[a][0] - t[a][1] + t[a][2]),
                              t[a][2]};
        for (int b = 0; b < 4; ++b) u[((4 * a + b) * c + ci) * o + oi] = row[b];
      }
    }
  }
}

// v[p][c][NV vectors] = (B^T d B)[p] for the 4x4 tile d of every channel under the output block at
// (r0, q0); what lies in the border (or past the tensor, for a last block of an odd size) reads as 0.
template <int NV>
static void transform_input(const WinoDims& d, const float* x, int64_t r0, int64_t q0, int64_t nb, float* v) {
  const int64_t hi = d.top + r0 - d.pad, wi = d.left + q0 - d.pad;  // the tile's first row and column
  const bool inside = hi >= 0 && wi >= 0 && hi + 4 <= d.h && wi + 4 <= d.w;
  for (int64_t ci = 0; ci < d.c; ++ci) {
    for (int s = 0; s < NV; ++s) {
      vf t[4][4];
      for (int col = 0; col < 4; ++col) {
        vf e[4];
        for (int row = 0; row < 4; ++row) {
          const bool in = inside || (hi + row >= 0 && hi + row < d.h && wi + col >= 0 && wi + col < d.w);
          e[row] = in ? load(x + d.x_at(ci, hi + row, wi + col) + nb + kVec * s) : vf{};
        }
        t[0][col] = e[0] - e[2];
        t[1][col] = e[1] + e[2];
        t[2][col] = e[2] - e[1];
        t[3][col] = e[1] - e[3];
      }
      for (int a = 0; a < 4; ++a) {
        const vf row[4] = {t[a][0] - t[a][2], t[a][1] + t[a][2], t[a][2] - t[a][1], t[a][1] - t[a][3]};
        for (int b = 0; b < 4; ++b) store(v + ((4 * a + b) * d.c + ci) * NV * kVec + kVec * s, row[b]);
      }
    }
  }
}

// The 2x2 outputs at (r0, q0) of filters [o0, o0 + OB): the channels' sums of u * v at each of the 16
// positions, transformed back (A^T m A); outputs past the output's edge are not written.
template <int OB, int NV>
static void multiply_tile(const WinoDims& d, const float* u, const float* v, float* y, int64_t r0, int64_t q0,
                          int64_t o0, int64_t nb) {
  vf m[16][OB][NV];
  for (int p = 0; p < 16; ++p) {
    vf acc[OB][NV];
    for (int b = 0; b < OB; ++b)
      for (int s = 0; s < NV; ++s) acc[b][s] = vf{};
    const float* vp = v + p * d.c * NV * kVec;
    const float* up = u + p * d.c * d.o + o0;
    for (int64_t ci = 0; ci < d.c; ++ci) {
      vf xv[NV];
      for (int s = 0; s < NV; ++s) xv[s] = load(vp + (ci * NV + s) * kVec);
      for (int b = 0; b < OB; ++b)
        for (int s = 0; s < NV; ++s) acc[b][s] += up[ci * d.o + b] * xv[s];
    }
    for (int b = 0; b < OB; ++b)
      for (int s = 0; s < NV; ++s) m[p][b][s] = acc[b][s];
  }
  const int rows = std::min<int64_t>(2, d.oh - r0), cols = std::min<int64_t>(2, d.ow - q0);
  for (int b = 0; b < OB; ++b) {
    for (int s = 0; s < NV; ++s) {
      vf r[2][4];
      for (int col = 0; col < 4; ++col) {
        r[0][col] = m[col][b][s] + m[4 + col][b][s] + m[8 + col][b][s];
        r[1][col] = m[4 + col][b][s] - m[8 + col][b][s] - m[12 + col][b][s];
      }
      for (int a = 0; a < rows; ++a) {
        float* yp = y + d.y_at(o0 + b, r0 + a, q0) + nb + kVec * s;
        store(yp, r[a][0] + r[a][1] + r[a][2]);
        if (cols > 1) store(yp + d.n, r[a][1] - r[a][2] - r[a][3]);
      }
    }
  }
}

// One row of 2x2 output blocks for one block of samples: each block's input tiles transformed once,
// then multiplied for every block of filters.
template <int NV>
static void winograd_row(const WinoDims& d, const float* x, const float* u, float* y, int64_t r0, int64_t nb) {
  thread_local std::vector<float> buffer;
  buffer.resize(16 * d.c * NV * kVec);
  float* v = buffer.data();
  for (int64_t q0 = 0; q0 < d.ow; q0 += 2) {
    transform_input<NV>(d, x, r0, q0, nb, v);
    for (int64_t o0 = 0; o0 < d.o; o0 += kWinoFilters) {
#define CALL(B) multiply_tile<B, NV>(d, u, v, y, r0, q0, o0, nb)
      switch (std::min<int64_t>(kWinoFilters, d.o - o0)) {
        case 1: CALL(1); break; case 2: CALL(2); break; case 3: CALL(3); break;
        case 4: CALL(4); break; case 5: CALL(5); break; default: CALL(6); break;
      }
#undef CALL
    }
  }
}

// The whole call: the kernel transformed once, then rows of output blocks by blocks of samples.
static void convolve(ffi::ThreadPool& pool, const WinoDims& d, const float* x, const float* k, bool turned, float* y) {
  std::vector<float> u(16 * d.c * d.o);
  transform_kernel(k, d.c, d.o, turned, u.data());
  const float* up = u.data();
  const int64_t rows = blocks(d.oh, 2), nbs = blocks(d.n / kVec, kWinoVectors);
  parallel_for(pool, rows * nbs, [&d, x, up, y, nbs](int64_t unit) {
    const int64_t r0 = unit / nbs * 2, nb = unit % nbs * kWinoVectors * kVec;
    if ((d.n - nb) / kVec >= kWinoVectors)
      winograd_row<kWinoVectors>(d, x, up, y, r0, nb);
    else
      winograd_row<1>(d, x, up, y, r0, nb);
  });
}

static ffi::Error check_3x3(const Dims& d) {
  if (d.kh != 3 || d.kw != 3) return ffi::Error::InvalidArgument("Winograd's F(2x2, 3x3) takes 3x3 kernels");
  return ffi::Error::Success();
}

// y = conv.cc's ConvForward(x, k).
static ffi::Error ConvForwardWinogradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> k,
                                          ffi::ResultBuffer<ffi::F32> y) {
  Dims shape;
  if (auto e = dims_of(x.dimensions(), k.dimensions(), &shape); e.failure()) return e;
  if (auto e = check_3x3(shape); e.failure()) return e;
  const WinoDims d{shape.c, shape.h, shape.w, shape.n, 0, shape.o, shape.oh, shape.ow, 0, 0};
  convolve(pool, d, x.typed_data(), k.typed_data(), false, y->typed_data());
  return ffi::Error::Success();
}

// dx = conv.cc's ConvInputGrad(dy, k, top, left): the unpadded input's gradient (C, H, W, N), which sits
// at rows top.. and columns left.. of the input the forward pass convolved.
static ffi::Error ConvInputGradWinogradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> k,
                                            int64_t top, int64_t left, ffi::ResultBuffer<ffi::F32> dx) {
  Dims shape;
  Crop crop;
  const auto gd = dy.dimensions(), kd = k.dimensions(), xd = dx->dimensions();
  if (auto e = input_grad_dims(gd, kd, xd, top, left, &shape, &crop); e.failure()) return e;
  if (auto e = check_3x3(shape); e.failure()) return e;
  const WinoDims d{shape.o, shape.oh, shape.ow, shape.n, 2, shape.c, crop.h, crop.w, top, left};
  convolve(pool, d, dy.typed_data(), k.typed_data(), true, dx->typed_data());
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvForwardWinograd, ConvForwardWinogradImpl,
                              two_tensors()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvInputGradWinograd, ConvInputGradWinogradImpl,
                              two_tensors()
                                  .Attr<int64_t>("top")
                                  .Attr<int64_t>("left")
                                  .Ret<ffi::Buffer<ffi::F32>>());
