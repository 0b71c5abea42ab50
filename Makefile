# `make test` and `make demo` work on a fresh clone with only Python 3 and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo check bench docs clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

demo: $(STAMP)
	$(PY) examples/quickstart.py

check: $(STAMP)
	$(PY) -m ruff check flowdsl tests examples benchmarks
	$(PY) -m mypy flowdsl

# bench: its own venv with flowdsl from this tree and the peers it is measured against
bench:
	test -x .bench-venv/bin/python || $(PYTHON) -m venv .bench-venv
	.bench-venv/bin/python -m pip install --quiet --upgrade pip
	.bench-venv/bin/python -m pip install --quiet -e '.[ray]' 'minipipe==0.1.9' pypeln mpire numpy psutil matplotlib
	.bench-venv/bin/python benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info
