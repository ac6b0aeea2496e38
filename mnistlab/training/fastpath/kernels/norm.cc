// Batch normalization in training, over the channels of a (channels, height, width, batch) tensor,
// as XLA FFI custom calls for the CPU: the batch's moments, and the input's gradient (through the
// ReLU that follows it, where one does) with the sums that give gamma's and beta's.
//
// Why: XLA's CPU backend runs each of batch norm's sums as its own pass over the tensor (a sample-
// weighted sum even as a product with the weights broadcast to the tensor's full size), and writes
// the ReLU's masked gradient and the centred input out between them: about ten passes over a 6.4 MB
// tensor per layer for the best preset's first stage, 16% of its training step on a 2-core Zen 3
// (bench/ab.py --compare norm). Here each channel is one thread's work: the moments read it twice
// (the second time from cache), the gradient reads the gradient and the input twice and writes once.
//
// Each channel's sums run in one fixed order, so results do not depend on the thread count.
#include <cstdint>

#include "common.h"

struct Planes {
  int64_t c, size, n;  // channels, positions per channel (H x W), batch
  int64_t at(int64_t ci, int64_t p) const { return (ci * size + p) * n; }
};

static ffi::Error planes_of(ffi::Span<const int64_t> xd, int64_t weights, Planes* d) {
  if (xd.size() != 4) return ffi::Error::InvalidArgument("expected a rank-4 (C, H, W, N) input");
  *d = Planes{xd[0], xd[1] * xd[2], xd[3]};
  if (weights != d->n) return ffi::Error::InvalidArgument("one weight per sample expected");
  return ffi::Error::Success();
}

// Sum over one channel's positions and samples of w[n] f(x[p, n]) (f applied to vectors and to
// single values alike): four vector accumulators in turn, so that consecutive adds do not wait on
// each other, then the samples past the last whole vector.
template <class F>
static float weighted_sum(const Planes& d, const float* x, const float* w, F f) {
  const int64_t whole = d.n / kVec * kVec;
  vf acc[4] = {};
  float tail = 0;
  int k = 0;
  for (int64_t p = 0; p < d.size; ++p, x += d.n) {
    for (int64_t nb = 0; nb < whole; nb += kVec, k = (k + 1) & 3) acc[k] += load(w + nb) * f(load(x + nb));
    for (int64_t i = whole; i < d.n; ++i) tail += w[i] * f(x[i]);
  }
  return hsum((acc[0] + acc[1]) + (acc[2] + acc[3])) + tail;
}

static float weight_sum(const Planes& d, const float* w) {
  float s = 0;
  for (int64_t i = 0; i < d.n; ++i) s += w[i];
  return s * d.size;
}

// moments[c] = (mean, variance) of channel c over positions and samples, each sample weighted by
// w (0 for the padding of a short last batch): the mean first, then the mean square about it.
static ffi::Error NormMomentsImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                                  ffi::ResultBuffer<ffi::F32> moments) {
  Planes d;
  if (auto e = planes_of(x.dimensions(), w.element_count(), &d); e.failure()) return e;
  const float* xp = x.typed_data();
  const float* wp = w.typed_data();
  float* mp = moments->typed_data();
  const float count = weight_sum(d, wp);
  parallel_for(pool, d.c, [&d, xp, wp, mp, count](int64_t c) {
    const float* xc = xp + d.at(c, 0);
    const float mean = weighted_sum(d, xc, wp, [](auto v) { return v; }) / count;
    const float var = weighted_sum(d, xc, wp, [mean](auto v) { return (v - mean) * (v - mean); }) / count;
    mp[2 * c] = mean;
    mp[2 * c + 1] = var;
  });
  return ffi::Error::Success();
}

// Given the output's gradient g and per channel (scale, shift, mean, inv): the forward pass computed
// y = x scale + shift (scale = gamma inv, inv = 1 / sqrt(variance + epsilon)), then max(y, 0) where
// relu. With dz = g (0 where the ReLU cut y) and M the weighted count:
//   sums[c] = (sum dz, sum dz (x - mean))  -> beta's gradient, and gamma's divided by inv;
//   dx = scale dz - w[n] scale / M (sum dz + (x - mean) inv^2 sum dz (x - mean)).
static ffi::Error NormGradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> g, ffi::Buffer<ffi::F32> x,
                               ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> params, int64_t relu,
                               ffi::ResultBuffer<ffi::F32> dx, ffi::ResultBuffer<ffi::F32> sums) {
  Planes d;
  if (auto e = planes_of(x.dimensions(), w.element_count(), &d); e.failure()) return e;
  if (g.element_count() != x.element_count()) return ffi::Error::InvalidArgument("g and x differ in size");
  if (static_cast<int64_t>(params.element_count()) != 4 * d.c) return ffi::Error::InvalidArgument("expected (C, 4) parameters");
  const float* gp = g.typed_data();
  const float* xp = x.typed_data();
  const float* wp = w.typed_data();
  const float* pp = params.typed_data();
  float* dxp = dx->typed_data();
  float* sp = sums->typed_data();
  const float count = weight_sum(d, wp);
  const int64_t whole = d.n / kVec * kVec;
  parallel_for(pool, d.c, [&, count, whole](int64_t c) {
    const float scale = pp[4 * c], shift = pp[4 * c + 1], mean = pp[4 * c + 2], inv = pp[4 * c + 3];
    const int64_t base = d.at(c, 0), end = d.at(c + 1, 0);
    // The ReLU's mask as the forward pass drew it: y > 0 (NaN and y <= 0 pass nothing).
    auto masked = [scale, shift, relu](auto gv, auto xv) {
      return relu ? (xv * scale + shift > 0 ? gv : decltype(gv){}) : gv;  // a zero, not 0 * gv (NaN for inf)
    };
    vf s1[2] = {}, s2[2] = {};
    float t1 = 0, t2 = 0;
    int k = 0;
    for (int64_t row = base; row < end; row += d.n) {
      for (int64_t nb = 0; nb < whole; nb += kVec, k ^= 1) {
        const vf xv = load(xp + row + nb), dz = masked(load(gp + row + nb), xv);
        s1[k] += dz;
        s2[k] += dz * (xv - mean);
      }
      for (int64_t i = whole; i < d.n; ++i) {
        const float dz = masked(gp[row + i], xp[row + i]);
        t1 += dz;
        t2 += dz * (xp[row + i] - mean);
      }
    }
    const float sum1 = hsum(s1[0] + s1[1]) + t1, sum2 = hsum(s2[0] + s2[1]) + t2;
    sp[2 * c] = sum1;
    sp[2 * c + 1] = sum2;
    const float a = scale * sum1 / count, b = scale * inv * inv * sum2 / count;
    for (int64_t row = base; row < end; row += d.n) {
      for (int64_t nb = 0; nb < whole; nb += kVec) {
        const vf xv = load(xp + row + nb), dz = masked(load(gp + row + nb), xv);
        store(dxp + row + nb, scale * dz - load(wp + nb) * (a + (xv - mean) * b));
      }
      for (int64_t i = whole; i < d.n; ++i) {
        const float xv = xp[row + i];
        dxp[row + i] = scale * masked(gp[row + i], xv) - wp[i] * (a + (xv - mean) * b);
      }
    }
  });
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(NormMoments, NormMomentsImpl,
                              two_tensors()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(NormGrad, NormGradImpl,
                              two_tensors()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("relu")
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
