"""``python -m benchmarks.speed``: the speed and memory harness (:mod:`benchmarks.speed.cli`)."""

from benchmarks.speed.cli import main

raise SystemExit(main())
