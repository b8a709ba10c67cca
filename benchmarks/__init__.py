"""Everything that measures sslosses, in four parts (run from the repository root):

- :mod:`benchmarks.references`: the original formulations, written out plainly: the oracle of
  the tests (``tests/``) and the baselines of the speed harness;
- :mod:`benchmarks.speed`: the speed and memory harness (``python -m benchmarks.speed``), its
  case catalogue, targets, baselines and the measurements behind the ``"auto"`` rules;
- :mod:`benchmarks.gpu_check`: the accelerator check (``python -m benchmarks.gpu_check``);
- :mod:`benchmarks.train`: the reference training application (``python -m benchmarks.train``).

Results they write live in ``benchmarks/results/``.
"""
