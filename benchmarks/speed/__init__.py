"""The speed and memory harness: sslosses against the computations it replaces.

Run from the repository root: ``python -m benchmarks.speed`` (``--help``, ``--list``). Its
parts: :mod:`~benchmarks.speed.cli` (the command line), :mod:`~benchmarks.speed.cases` (the
case catalogue), :mod:`~benchmarks.speed.baselines` (the original repositories' formulations as
cases, built on :mod:`benchmarks.references`), :mod:`~benchmarks.speed.harness` (timing, memory,
rendering), :mod:`~benchmarks.speed.targets` (the project's targets),
:mod:`~benchmarks.speed.readme` (README's highlights), and the measurements behind the
``"auto"`` rules (:mod:`~benchmarks.speed.barlow_auto_rule`,
:mod:`~benchmarks.speed.chunk_auto_rule`).
Nothing here imports torch at package import: the command line sets one thread first.
"""
