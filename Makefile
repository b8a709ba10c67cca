# One command per job; each creates .venv and installs what it needs on a fresh machine.
#   make train   the reference training run (every method on bundled digits, prints a table)
#   make test    every check: ruff, ruff format, mypy --strict, pytest (+doctests), sphinx -W
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# CI may set PIP_CONSTRAINT (e.g. to pin torch==2.13.0, a CPU wheel); normal pip works without.
export OMP_NUM_THREADS ?= 1

.PHONY: install test lint typecheck pytest docs train bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e ".[dev]"
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
	$(PY) docs/check_math.py docs/_build/html --browser
	$(VENV)/bin/sphinx-build -W --keep-going -q -b doctest docs docs/_build/doctest

test: lint typecheck pytest docs

train: install
	$(PY) benchmarks/train.py --method all --out runs/default

bench: install
	$(PY) benchmarks/speed.py

clean:
	rm -rf $(VENV) docs/_build runs
