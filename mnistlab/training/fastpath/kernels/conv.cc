// A stride-1 'valid' convolution on (channels, height, width, batch) tensors
// and its two gradients, as XLA FFI custom calls for the CPU: the forward
// pass, the kernel's gradient and the input's gradient.
//
// Why: XLA's route (ops.conv_chwn) builds an im2col patch matrix, for
// the notebook CNN's second convolution 250 x 4096 floats (4 MB, past the L2
// cache), fills it in 25 passes, multiplies it, then builds the input's
// gradient as a second 4 MB matrix and adds it back patch by patch (col2im):
// about 1 ms of a 2.6 ms step on a 2-core machine whose memory is slow. Here
// each call reads its operands where they are (a few hundred KB, in L2) and
// keeps a tile of outputs in registers: several filters (or channels) times
// up to 64 samples (the batch axis, innermost and contiguous, is the vector
// axis), so each load feeds several multiply-adds.
//
// Each output element is one sum in a fixed order, so results do not depend
// on how the work is split over threads.
#include <algorithm>
#include <cstdint>

#include "common.h"
#include "conv_shapes.h"

// Register tiles: kFilters x kVectors accumulators (20 of AVX-512's 32 registers, 12 of AVX2's 16), and
// kernel width x grad_filters(width) for the kernel's gradient. With AVX2, 3 x 4 of those (and 5 loaded
// vectors: one register spilled) beat 3 x 2 by 20% (2-core AMD EPYC Zen 3, the best preset's convnet,
// the two builds timed alternately in one process); 5 x 4 would spill 9.
static constexpr int kFilters = kWide ? 5 : 6;      // filters (or input channels) per register tile
static constexpr int kVectors = kWide ? 4 : 2;      // vectors of kVec samples per register tile
static constexpr int grad_filters(int64_t kw) { return kWide || kw == 3 ? 4 : 2; }

// y[o0 .. o0 + OB, r, q, nb .. nb + kVec NV) for every q of output row r.
template <int OB, int NV>
static void forward_tile(const Dims& d, const float* x, const float* k, float* y, int64_t r, int64_t o0,
                         int64_t nb) {
  for (int64_t q = 0; q < d.ow; ++q) {
    vf acc[OB][NV];
    for (int b = 0; b < OB; ++b)
      for (int v = 0; v < NV; ++v) acc[b][v] = vf{};
    for (int64_t i = 0; i < d.kh; ++i) {
      for (int64_t j = 0; j < d.kw; ++j) {
        for (int64_t ci = 0; ci < d.c; ++ci) {
          const float* xp = x + d.x_at(ci, r + i, q + j) + nb;
          const float* kp = k + d.k_at(i, j, ci, o0);
          vf xv[NV];
          for (int v = 0; v < NV; ++v) xv[v] = load(xp + kVec * v);
          for (int b = 0; b < OB; ++b)
            for (int v = 0; v < NV; ++v) acc[b][v] += kp[b] * xv[v];
        }
      }
    }
    for (int b = 0; b < OB; ++b)
      for (int v = 0; v < NV; ++v) store(y + d.y_at(o0 + b, r, q) + nb + kVec * v, acc[b][v]);
  }
}

// dk[i, j, ci, o0 .. o0 + OB) for every j: sums over output positions and samples.
template <int KW, int OB>
static void kernel_grad_tile(const Dims& d, const float* x, const float* dy, float* dk, int64_t ci, int64_t i,
                             int64_t o0) {
  vf acc[KW][OB];
  for (int j = 0; j < KW; ++j)
    for (int b = 0; b < OB; ++b) acc[j][b] = vf{};
  for (int64_t r = 0; r < d.oh; ++r) {
    for (int64_t q = 0; q < d.ow; ++q) {
      for (int64_t nb = 0; nb < d.n; nb += kVec) {
        vf g[OB];
        for (int b = 0; b < OB; ++b) g[b] = load(dy + d.y_at(o0 + b, r, q) + nb);
        const float* xp = x + d.x_at(ci, r + i, q) + nb;
        for (int j = 0; j < KW; ++j) {
          const vf xv = load(xp + j * d.n);
          for (int b = 0; b < OB; ++b) acc[j][b] += xv * g[b];
        }
      }
    }
  }
  for (int j = 0; j < KW; ++j)
    for (int b = 0; b < OB; ++b) dk[d.k_at(i, j, ci, o0 + b)] = hsum(acc[j][b]);
}

// dx[c0 .. c0 + CB, r, q, nb .. nb + kVec NV) for every q of input row r inside the crop: sums over the
// filters and the kernel taps that reach (r, q) from a valid output position.
template <int CB, int NV>
static void input_grad_tile(const Dims& d, const Crop& crop, const float* dy, const float* k, float* dx, int64_t r,
                            int64_t c0, int64_t nb) {
  const int64_t i0 = std::max<int64_t>(0, r - d.oh + 1), i1 = std::min<int64_t>(d.kh, r + 1);
  for (int64_t q = crop.left; q < crop.left + crop.w; ++q) {
    const int64_t j0 = std::max<int64_t>(0, q - d.ow + 1), j1 = std::min<int64_t>(d.kw, q + 1);
    vf acc[CB][NV];
    for (int b = 0; b < CB; ++b)
      for (int v = 0; v < NV; ++v) acc[b][v] = vf{};
    for (int64_t i = i0; i < i1; ++i) {
      for (int64_t j = j0; j < j1; ++j) {
        for (int64_t oi = 0; oi < d.o; ++oi) {
          const float* gp = dy + d.y_at(oi, r - i, q - j) + nb;
          vf g[NV];
          for (int v = 0; v < NV; ++v) g[v] = load(gp + kVec * v);
          for (int b = 0; b < CB; ++b) {
            const float kv = k[d.k_at(i, j, c0 + b, oi)];
            for (int v = 0; v < NV; ++v) acc[b][v] += kv * g[v];
          }
        }
      }
    }
    for (int b = 0; b < CB; ++b)
      for (int v = 0; v < NV; ++v) store(dx + crop.at(d, c0 + b, r, q) + nb + kVec * v, acc[b][v]);
  }
}

// Calls CALL(B, V) with the compile-time B (1..6) and V (1..4) of a tile at the edge of the filters
// (or channels) and the batch.
#define BY_VECTORS(B, V, CALL)                                        \
  switch (V) {                                                        \
    case 1: CALL(B, 1); break; case 2: CALL(B, 2); break;             \
    case 3: CALL(B, 3); break; default: CALL(B, 4); break;            \
  }
#define DISPATCH(B, V, CALL)                                          \
  switch (B) {                                                        \
    case 1: BY_VECTORS(1, V, CALL) break;                             \
    case 2: BY_VECTORS(2, V, CALL) break;                             \
    case 3: BY_VECTORS(3, V, CALL) break;                             \
    case 4: BY_VECTORS(4, V, CALL) break;                             \
    case 5: BY_VECTORS(5, V, CALL) break;                             \
    default: BY_VECTORS(6, V, CALL) break;                            \
  }

static ffi::Error ConvForwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> k,
                                  ffi::ResultBuffer<ffi::F32> y) {
  Dims d;
  if (auto e = dims_of(x.dimensions(), k.dimensions(), &d); e.failure()) return e;
  const float* xp = x.typed_data();
  const float* kp = k.typed_data();
  float* yp = y->typed_data();
  const int64_t ob = blocks(d.o, kFilters), nbs = blocks(d.n / kVec, kVectors);
  // The filter blocks of one output row and block of samples follow each other, so they read the same
  // input rows while those are in this core's cache (a row's 3 input rows of all samples can be more
  // than its L2 holds: 737 KB for the best preset's second convolution at batch 128).
  parallel_for(pool, d.oh * ob * nbs, [&d, xp, kp, yp, ob, nbs](int64_t unit) {
    const int64_t r = unit / (ob * nbs), o0 = unit % ob * kFilters, nb = unit / ob % nbs * kVectors * kVec;
    const int64_t filters = std::min<int64_t>(kFilters, d.o - o0), vectors = std::min<int64_t>(kVectors, (d.n - nb) / kVec);
#define CALL(B, V) forward_tile<B, V>(d, xp, kp, yp, r, o0, nb)
    DISPATCH(filters, vectors, CALL)
#undef CALL
  });
  return ffi::Error::Success();
}

static ffi::Error ConvKernelGradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                                     ffi::ResultBuffer<ffi::F32> dk) {
  Dims d;
  if (auto e = dims_of(x.dimensions(), dk->dimensions(), &d); e.failure()) return e;
  if (auto e = check_output_grad(dy.dimensions(), d); e.failure()) return e;
  if (d.kw != 3 && d.kw != 5) return ffi::Error::InvalidArgument("kernel widths other than 3 and 5 are not built");
  const float* xp = x.typed_data();
  const float* gp = dy.typed_data();
  float* dkp = dk->typed_data();
  const int64_t per = grad_filters(d.kw), ob = blocks(d.o, per);
  parallel_for(pool, d.c * d.kh * ob, [&d, xp, gp, dkp, per, ob](int64_t unit) {
    const int64_t ci = unit / (d.kh * ob), i = unit / ob % d.kh, o0 = unit % ob * per;
    const int64_t filters = std::min<int64_t>(per, d.o - o0);
#define CALL(KW, B) kernel_grad_tile<KW, B>(d, xp, gp, dkp, ci, i, o0)
#define BY_FILTERS(KW)                                  \
  switch (filters) {                                    \
    case 1: CALL(KW, 1); break; case 2: CALL(KW, 2); break; \
    case 3: CALL(KW, 3); break; default: CALL(KW, 4); break; \
  }
    if (d.kw == 5) { BY_FILTERS(5) } else { BY_FILTERS(3) }
#undef BY_FILTERS
#undef CALL
  });
  return ffi::Error::Success();
}

// dx: the gradient of the unpadded input (C, H, W, N), which sits at rows top.. and columns left.. of the
// input the forward pass convolved (its height and width follow from dy's and the kernel's).
static ffi::Error ConvInputGradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> k,
                                    int64_t top, int64_t left, ffi::ResultBuffer<ffi::F32> dx) {
  const auto gd = dy.dimensions(), kd = k.dimensions(), xd = dx->dimensions();
  Dims d;
  Crop crop;
  if (auto e = input_grad_dims(gd, kd, xd, top, left, &d, &crop); e.failure()) return e;
  const float* gp = dy.typed_data();
  const float* kp = k.typed_data();
  float* dxp = dx->typed_data();
  const int64_t cb = blocks(d.c, kFilters), nbs = blocks(d.n / kVec, kVectors);
  // Channel blocks of one row and block of samples follow each other (as the forward pass's filter
  // blocks): 8.6 -> 6.9 ms for the best preset's second convolution at batch 128 on a Zen 3.
  parallel_for(pool, crop.h * cb * nbs, [&d, &crop, gp, kp, dxp, cb, nbs](int64_t unit) {
    const int64_t r = crop.top + unit / (cb * nbs), c0 = unit % cb * kFilters, nb = unit / cb % nbs * kVectors * kVec;
    const int64_t channels = std::min<int64_t>(kFilters, d.c - c0), vectors = std::min<int64_t>(kVectors, (d.n - nb) / kVec);
#define CALL(B, V) input_grad_tile<B, V>(d, crop, gp, kp, dxp, r, c0, nb)
    DISPATCH(channels, vectors, CALL)
#undef CALL
  });
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvForward, ConvForwardImpl,
                              two_tensors()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvKernelGrad, ConvKernelGradImpl,
                              two_tensors()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvInputGrad, ConvInputGradImpl,
                              two_tensors()
                                  .Attr<int64_t>("top")
                                  .Attr<int64_t>("left")
                                  .Ret<ffi::Buffer<ffi::F32>>());
