"""Private kernels behind the losses' fast paths.

- :mod:`sslosses.kernels.barlow_twins_torch`: the PyTorch cores of Barlow Twins (dense and
  tiled cross-correlation, Gram identity), as custom autograd functions.
- :mod:`sslosses.kernels.barlow_twins_triton`: Triton kernels for the fused Barlow Twins path on
  CUDA. Triton is optional: the module imports without it and reports ``HAS_TRITON = False``.

Nothing here is imported by ``import sslosses`` eagerly except the PyTorch cores; the Triton
module is imported on first use with a CUDA tensor, so that CPU users never pay for it.
"""
