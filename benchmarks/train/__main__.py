"""``python -m benchmarks.train``: the reference training's command line (see the package)."""

import sys

from benchmarks.train.loop import cli

sys.exit(cli())
