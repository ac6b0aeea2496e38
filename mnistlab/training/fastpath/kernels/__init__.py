"""Hand-written CPU kernels for what XLA's CPU backend runs slowly:
- a convolution followed by max pooling, in the fast path's (C, H, W, N) layout (conv_pool.cc);
- a convolution and its two gradients, in that layout (conv.cc); a 3x3 one's forward pass and input
  gradient by Winograd's F(2x2, 3x3), with fewer multiply-adds (winograd.cc);
- batch norm in training over such tensors, and its gradient through the ReLU after it (norm.cc);
- a dense layer's two products over an input that is mostly zeros, such as pixels (sparse_dense.cc).

They are an optimisation, never a requirement: without a compiler, or with
MNISTLAB_KERNELS=0, `build.load(group)` gives the reason and routes.py keeps
XLA's own route, which computes the same function (ops.conv_pool,
ops.conv_direct, ops.batch_norm_chwn and ops.sparse_dense wrap these calls with their gradients;
tests/training/test_kernels.py checks the two routes against each other).
build.py compiles, checks and registers the library; ffi.py holds the calls.
"""
