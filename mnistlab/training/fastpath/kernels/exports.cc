// The constants of common.h as plain C functions, so the Python loader (kernels/build.py) can check
// that the library it loads was built with the values the Python side pads and sizes its buffers by.
#include "common.h"

extern "C" {
int64_t mnistlab_lanes() { return kLanes; }
int64_t mnistlab_sparse_chunk() { return kChunk; }
int64_t mnistlab_max_pool() { return kMaxPool; }
int64_t mnistlab_kernel_size_count() { return sizeof kKernelSizes / sizeof kKernelSizes[0]; }
int64_t mnistlab_kernel_size(int64_t i) { return kKernelSizes[i]; }
}
