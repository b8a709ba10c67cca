"""Private kernels behind the losses' fast paths.

- :mod:`sslosses.kernels.offdiag`: the off-diagonal primitive shared by Barlow Twins and
  VICReg (a weighted sum of squares of a ``(D, D)`` matrix built from ``(N, D)`` inputs) and
  the measured ``algorithm="auto"`` rule.
- :mod:`sslosses.kernels.offdiag_torch`: its PyTorch cores (the plain-autograd dense reference,
  the tiled path and the Gram identity as custom autograd functions).
- :mod:`sslosses.kernels.offdiag_triton`: Triton kernels for the fused path on CUDA. Triton is
  optional: the module imports without it and reports ``HAS_TRITON = False``.

Nothing here is imported by ``import sslosses`` eagerly except the PyTorch cores; the Triton
module is imported on first use with a CUDA tensor, so that CPU users never pay for it.
"""
