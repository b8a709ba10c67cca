# One command per job; each creates .venv and installs what it needs on a fresh machine.
#   make train   the reference training run (every method on bundled digits, prints a table)
#   make gpu-check  on a CUDA machine: every accelerator path checked, timed and trained, in one
#                report under benchmarks/results/ (~10 min; --dry-run runs it on CPU)
#   make test    every check: ruff, ruff format, mypy --strict, pytest (+doctests), sphinx -W,
#                and the release check (wheel + sdist built, metadata checked, the wheel installed
#                into a clean venv with only torch and smoke-tested from outside the tree)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The tools (ruff, mypy, pytest, hypothesis, sphinx, ...) are pinned here so that a fresh machine
# runs the same checks as CI; torch is not pinned and floats within pyproject.toml's range.
# CI adds PIP_CONSTRAINT=.ci/constraints.txt (the CPU torch wheel on its disk) for speed.
TOOLS  ?= constraints/tools.txt
# The clean venv for the wheel check: only torch (the version .venv has) and the built wheel.
WHEEL_VENV ?= .venv-wheel
export OMP_NUM_THREADS ?= 1

.PHONY: install test lint typecheck pytest docs package train bench gpu-check lock clean

$(VENV)/.installed: pyproject.toml $(TOOLS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -c $(TOOLS) -e ".[dev]"
	touch $@

install: $(VENV)/.installed

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy --strict sslosses

pytest: install
	$(PY) -m pytest -q tests sslosses

docs: install
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html
	$(PY) docs/check_math.py docs/_build/html --browser $(CHECK_MATH_FLAGS)
	$(VENV)/bin/sphinx-build -W --keep-going -q -b doctest docs docs/_build/doctest

$(WHEEL_VENV)/.torch: $(VENV)/.installed
	rm -rf $(WHEEL_VENV)
	$(PYTHON) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/python -m pip install -q \
	    "torch==$$($(PY) -c 'import torch; print(torch.__version__.split("+")[0])')"
	touch $@

package: install $(WHEEL_VENV)/.torch
	rm -rf dist
	$(PY) -m build --no-isolation --outdir dist .
	$(PY) -m twine check --strict dist/*
	$(WHEEL_VENV)/bin/python -m pip install -q --no-deps --force-reinstall dist/*.whl
	cd /tmp && $(abspath $(WHEEL_VENV))/bin/python -I $(abspath .ci/wheel_smoke.py) $(abspath sslosses)

test: lint typecheck pytest docs package

train: install
	$(PY) -m benchmarks.train --method all --out runs/default

bench: install
	$(PY) -m benchmarks.speed

gpu-check: install
	$(PY) -m benchmarks.gpu_check

# Re-pin the tools after changing the extras: the versions .venv resolved, minus torch/triton.
lock: install
	$(PY) .ci/lock.py $(TOOLS)

clean:
	rm -rf $(VENV) $(WHEEL_VENV) docs/_build runs dist build
