"""Write the tools constraints file from what ``.venv`` resolved (``make lock``).

Every installed distribution is pinned except the package itself, torch, triton and the CUDA
runtime wheels that a CUDA torch brings: those float within pyproject.toml's range.
"""

from __future__ import annotations

import sys
from importlib.metadata import distributions
from pathlib import Path

FLOATING = ("sslosses", "torch", "triton", "nvidia-", "cuda-", "pip")
HEADER = """\
# Pinned tool versions for `make` (checkers, docs, test, release and training helpers), so that a
# fresh machine runs the same checks as CI. Written by `make lock` (.ci/lock.py); do not edit.
# torch, triton and CUDA runtime wheels are NOT pinned: they float within pyproject.toml's range.
# The pins apply on Python 3.11 and newer; some pinned releases need 3.11, so on Python 3.10 the
# tools resolve freely.
"""


def main(out: Path) -> None:
    pins = {}
    for dist in distributions():
        name = dist.metadata["Name"]
        if not name or name.lower().startswith(FLOATING):
            continue
        pins[name.lower()] = f'{name}=={dist.version} ; python_version >= "3.11"'
    out.write_text(HEADER + "".join(pins[k] + "\n" for k in sorted(pins)))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
