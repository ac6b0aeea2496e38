// A stride-1 'valid' convolution followed by non-overlapping p x p max pooling,
// on (channels, height, width, batch) tensors, as two XLA FFI custom calls for
// the CPU: the forward pass (pooled raw outputs and each window's argmax) and
// the kernel's gradient.
//
// Why: XLA's CPU backend runs a first convolution layer (1 input channel, a
// few filters) through an im2col buffer and a matrix product whose shape it
// handles badly (25x36864 by 36864x10 for the notebook CNN's weight gradient,
// ~23 GFLOP/s), then a separate pass to route the pooled gradient back to the
// window maxima. Here both read the input directly, the batch axis (innermost,
// contiguous) is the vector axis, and the gradient is routed inside the loop.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "common.h"

typedef int32_t vfi __attribute__((vector_size(kVec * sizeof(int32_t))));
typedef uint8_t vu8 __attribute__((vector_size(kVec)));

// Filters per pass of forward_row: its accumulators take all but a few of the registers (32 with AVX-512, else 16).
static constexpr int kPoolFilters = kWide ? 16 : 12;

struct Shape {
  int64_t c, h, w, n;        // input (C, H, W, N), N a multiple of 16
  int64_t kh, kw, o;         // kernel (KH, KW, C, O)
  int64_t p, ph, pw;         // pool size, pooled height and width
};

// Pooled row `r` for filters [o0, o0 + OB): each window's max of the raw convolution, and where it is.
template <int OB>
static void forward_row(const Shape& s, const float* x, const float* k, float* y, uint8_t* idx,
                        int64_t r, int64_t o0) {
  for (int64_t q = 0; q < s.pw; ++q) {
    for (int64_t nb = 0; nb < s.n; nb += kVec) {
      vf best[OB] = {};   // set at window position 0 (the zeros only quiet -Wmaybe-uninitialized)
      vfi arg[OB] = {};
      for (int64_t off = 0; off < s.p * s.p; ++off) {
        const int64_t h = r * s.p + off / s.p, w = q * s.p + off % s.p;
        vf acc[OB];
        for (int b = 0; b < OB; ++b) acc[b] = vf{};
        for (int64_t c = 0; c < s.c; ++c) {
          for (int64_t i = 0; i < s.kh; ++i) {
            const float* xrow = x + ((c * s.h + h + i) * s.w + w) * s.n + nb;
            const float* krow = k + (i * s.kw * s.c + c) * s.o + o0;
            for (int64_t j = 0; j < s.kw; ++j) {
              const vf xv = load(xrow + j * s.n);
              const float* kk = krow + j * s.c * s.o;
              for (int b = 0; b < OB; ++b) acc[b] += xv * kk[b];
            }
          }
        }
        for (int b = 0; b < OB; ++b) {
          if (off == 0) {
            best[b] = acc[b];
            arg[b] = vfi{};
          } else {
            const vfi better = acc[b] > best[b];  // strict: the first maximum wins a tie
            best[b] = better ? acc[b] : best[b];
            arg[b] = better ? (vfi{} + (int32_t)off) : arg[b];
          }
        }
      }
      for (int b = 0; b < OB; ++b) {
        const int64_t at = (((o0 + b) * s.ph + r) * s.pw + q) * s.n + nb;
        store(y + at, best[b]);
        for (int l = 0; l < kVec; ++l) idx[at + l] = (uint8_t)arg[b][l];
      }
    }
  }
}

template <int OB>
static void forward_rows(const Shape& s, const float* x, const float* k, float* y, uint8_t* idx, int64_t r) {
  int64_t o0 = 0;
  for (; o0 + OB <= s.o; o0 += OB) forward_row<OB>(s, x, k, y, idx, r, o0);
  switch (s.o - o0) {  // the remaining filters, fewer than OB
#define TAIL(B) case B: forward_row<B>(s, x, k, y, idx, r, o0); break;
    TAIL(1) TAIL(2) TAIL(3) TAIL(4) TAIL(5) TAIL(6) TAIL(7) TAIL(8)
    TAIL(9) TAIL(10) TAIL(11) TAIL(12) TAIL(13) TAIL(14) TAIL(15)
#undef TAIL
    default: break;
  }
}

// The kernel gradient for filter o, input channel c, kernel rows [i0, i0 + IB): sum over every pooled
// window's argmax position of (gradient there) x (the input patch there). IB x KW accumulators stay in
// registers: a 5x5 kernel's 25 fit AVX-512's 32, so it takes all its rows in one pass; AVX2 has 16 (kRows).
template <int IB, int KW>
static void kernel_grad(const Shape& s, const float* x, const float* g, const uint8_t* idx,
                        float* dk, int64_t o, int64_t c, int64_t i0) {
  vf acc[IB * KW];
  for (int t = 0; t < IB * KW; ++t) acc[t] = vf{};
  for (int64_t r = 0; r < s.ph; ++r) {
    for (int64_t q = 0; q < s.pw; ++q) {
      const int64_t at = ((o * s.ph + r) * s.pw + q) * s.n;
      for (int64_t nb = 0; nb < s.n; nb += kVec) {
        const vf gv = load(g + at + nb);
        vu8 raw;
        std::memcpy(&raw, idx + at + nb, sizeof raw);
        const vfi where = __builtin_convertvector(raw, vfi);
        for (int64_t off = 0; off < s.p * s.p; ++off) {
          const vf d = (where == (int32_t)off) ? gv : vf{};
          const int64_t h = r * s.p + off / s.p, w = q * s.p + off % s.p;
          const float* base = x + ((c * s.h + h + i0) * s.w + w) * s.n + nb;
          for (int i = 0; i < IB; ++i)
            for (int j = 0; j < KW; ++j) acc[i * KW + j] += d * load(base + (i * s.w + j) * s.n);
        }
      }
    }
  }
  for (int i = 0; i < IB; ++i)
    for (int j = 0; j < KW; ++j) dk[(((i0 + i) * KW + j) * s.c + c) * s.o + o] = hsum(acc[i * KW + j]);
}

// Kernel rows per pass of a square KW x KW kernel's gradient.
template <int KW>
static constexpr int kRows = kWide ? KW : std::min(KW, 12 / KW);

// The pass of kernel_grad that starts at kernel row i0: kRows rows, or the rows left in the last pass.
template <int KW>
static void kernel_grad_pass(const Shape& s, const float* x, const float* g, const uint8_t* idx,
                             float* dk, int64_t o, int64_t c, int64_t i0) {
  constexpr int rest = KW % kRows<KW>;
  if constexpr (rest != 0) {
    if (i0 + kRows<KW> > KW) return kernel_grad<rest, KW>(s, x, g, idx, dk, o, c, i0);
  }
  kernel_grad<kRows<KW>, KW>(s, x, g, idx, dk, o, c, i0);
}

static ffi::Error shape_of(ffi::Buffer<ffi::F32>& x, ffi::Buffer<ffi::F32>& k, int64_t p, Shape* s) {
  auto xd = x.dimensions(), kd = k.dimensions();
  if (xd.size() != 4 || kd.size() != 4) return ffi::Error::InvalidArgument("expected rank-4 input and kernel");
  *s = Shape{xd[0], xd[1], xd[2], xd[3], kd[0], kd[1], kd[3], p, 0, 0};
  if (kd[2] != s->c) return ffi::Error::InvalidArgument("kernel and input channels differ");
  if (s->n % kLanes) return ffi::Error::InvalidArgument("batch must be a multiple of 16");
  if (p < 1 || p > kMaxPool || s->h < s->kh || s->w < s->kw) return ffi::Error::InvalidArgument("bad pool or sizes");
  s->ph = (s->h - s->kh + 1) / p;
  s->pw = (s->w - s->kw + 1) / p;
  return ffi::Error::Success();
}

static ffi::Error ConvPoolForwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> k,
                                      ffi::ResultBuffer<ffi::F32> y, ffi::ResultBuffer<ffi::U8> idx,
                                      int64_t p) {
  Shape s;
  if (auto e = shape_of(x, k, p, &s); e.failure()) return e;
  const float* xp = x.typed_data();
  const float* kp = k.typed_data();
  float* yp = y->typed_data();
  uint8_t* ip = idx->typed_data();
  parallel_for(pool, s.ph, [&s, xp, kp, yp, ip](int64_t r) { forward_rows<kPoolFilters>(s, xp, kp, yp, ip, r); });
  return ffi::Error::Success();
}

static ffi::Error ConvPoolKernelGradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> k,
                                         ffi::Buffer<ffi::F32> g, ffi::Buffer<ffi::U8> idx,
                                         ffi::ResultBuffer<ffi::F32> dk, int64_t p) {
  Shape s;
  if (auto e = shape_of(x, k, p, &s); e.failure()) return e;
  void (*grad)(const Shape&, const float*, const float*, const uint8_t*, float*, int64_t, int64_t, int64_t);
  int64_t rows;
  if (s.kh == 5 && s.kw == 5) {
    grad = kernel_grad_pass<5>;
    rows = kRows<5>;
  } else if (s.kh == 3 && s.kw == 3) {
    grad = kernel_grad_pass<3>;
    rows = kRows<3>;
  } else {
    return ffi::Error::InvalidArgument("kernel sizes other than 3x3 and 5x5 are not built");
  }
  const int64_t passes = blocks(s.kh, rows);
  const float* xp = x.typed_data();
  const float* gp = g.typed_data();
  const uint8_t* ip = idx.typed_data();
  float* dkp = dk->typed_data();
  parallel_for(pool, s.o * s.c * passes, [&s, grad, rows, passes, xp, gp, ip, dkp](int64_t t) {
    grad(s, xp, gp, ip, dkp, t / passes / s.c, t / passes % s.c, t % passes * rows);
  });
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvPoolForward, ConvPoolForwardImpl,
                              two_tensors()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::U8>>()
                                  .Attr<int64_t>("pool"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvPoolKernelGrad, ConvPoolKernelGradImpl,
                              two_tensors()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::U8>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("pool"));
