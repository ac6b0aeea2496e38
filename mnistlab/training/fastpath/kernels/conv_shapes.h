// The direct convolution's shapes and their checks, which conv.cc's and winograd.cc's handlers share:
// one set of rules for what a convolution call takes.
#pragma once
#include <cstdint>

#include "common.h"

struct Dims {
  int64_t c, h, w, n;  // input (C, H, W, N), N a multiple of 16
  int64_t kh, kw, o;   // kernel (KH, KW, C, O)
  int64_t oh, ow;      // output height and width
  int64_t x_at(int64_t ci, int64_t hi, int64_t wi) const { return ((ci * h + hi) * w + wi) * n; }
  int64_t y_at(int64_t oi, int64_t hi, int64_t wi) const { return ((oi * oh + hi) * ow + wi) * n; }
  int64_t k_at(int64_t i, int64_t j, int64_t ci, int64_t oi) const { return ((i * kw + j) * c + ci) * o + oi; }
};

// Where the input's gradient goes: the padded input's rows [top, top + h) and columns [left, left + w),
// the input before its padding (whose own gradient the padding's transpose would otherwise cut out of
// the padded one, a copy of the whole tensor).
struct Crop {
  int64_t top, left, h, w;
  int64_t at(const Dims& d, int64_t ci, int64_t hi, int64_t wi) const { return ((ci * h + hi - top) * w + wi - left) * d.n; }
};

static ffi::Error dims_of(ffi::Span<const int64_t> xd, ffi::Span<const int64_t> kd, Dims* d) {
  if (xd.size() != 4 || kd.size() != 4) return ffi::Error::InvalidArgument("expected rank-4 input and kernel");
  *d = Dims{xd[0], xd[1], xd[2], xd[3], kd[0], kd[1], kd[3], xd[1] - kd[0] + 1, xd[2] - kd[1] + 1};
  if (kd[2] != d->c) return ffi::Error::InvalidArgument("kernel and input channels differ");
  if (d->n % kLanes) return ffi::Error::InvalidArgument("batch must be a multiple of 16");
  if (d->oh < 1 || d->ow < 1) return ffi::Error::InvalidArgument("kernel larger than the input");
  return ffi::Error::Success();
}

static ffi::Error check_output_grad(ffi::Span<const int64_t> gd, const Dims& d) {
  if (gd.size() != 4 || gd[0] != d.o || gd[1] != d.oh || gd[2] != d.ow || gd[3] != d.n)
    return ffi::Error::InvalidArgument("the output gradient's shape does not match");
  return ffi::Error::Success();
}

// The input's gradient's shapes: dy (O, OH, OW, N) and the kernel (KH, KW, C, O) give the convolved input
// d; dx (C, H, W, N) is its crop at rows top.. and columns left...
static ffi::Error input_grad_dims(ffi::Span<const int64_t> gd, ffi::Span<const int64_t> kd,
                                  ffi::Span<const int64_t> xd, int64_t top, int64_t left, Dims* d, Crop* crop) {
  if (gd.size() != 4 || kd.size() != 4 || xd.size() != 4) return ffi::Error::InvalidArgument("expected rank-4 operands");
  *d = Dims{xd[0], gd[1] + kd[0] - 1, gd[2] + kd[1] - 1, xd[3], kd[0], kd[1], kd[3], gd[1], gd[2]};
  *crop = Crop{top, left, xd[1], xd[2]};
  if (kd[2] != d->c) return ffi::Error::InvalidArgument("kernel and input channels differ");
  if (d->n % kLanes) return ffi::Error::InvalidArgument("batch must be a multiple of 16");
  if (top < 0 || left < 0 || top + crop->h > d->h || left + crop->w > d->w)
    return ffi::Error::InvalidArgument("the input lies outside the convolved one");
  return check_output_grad(gd, *d);
}
