# `make test` and `make demo` work on a fresh clone with only Python 3 and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test soak demo check package bench docs clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The tests also run the Ray executor (a large install the demo does not need).
RAY_STAMP := $(VENV)/.installed-ray
$(RAY_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,ray]'
	touch $(RAY_STAMP)

# The second pass runs the process executor under spawn, where every worker is a
# fresh interpreter and stages travel pickled: the tests of what that can change
# (executors, failures, injected faults, error policies, loops, hygiene, the
# explicit API, nesting, StopFlow, IO-bound stages, resilience, numpy scalars
# between workers), with serial cases
# deselected and fewer hypothesis examples.
SPAWN_TESTS := tests/test_executors.py tests/test_failures.py tests/test_faults.py \
	tests/test_policies.py tests/test_loop.py tests/test_hygiene.py tests/test_minipipe.py \
	tests/test_stop_flow.py tests/test_nesting.py tests/test_io.py \
	tests/test_resilience.py tests/test_batching.py tests/test_types.py \
	tests/test_numpy_scalars.py

test: $(RAY_STAMP)
	$(PY) -m pytest
	$(PY) -m pytest --start-method=spawn $(SPAWN_TESTS)

# soak: what make test runs, for much longer (not in CI): twenty times the
# hypothesis examples, and 500 runs of each loop body shape on the process executor;
# a test may take minutes, so the traceback dump of a slow test waits as long as
# the timeout does (a dump while a test runs can itself crash the interpreter)
soak: $(RAY_STAMP)
	FLOWDSL_SOAK=1 FLOWDSL_LOOP_RUNS=500 $(PY) -m pytest --timeout=3600 -o faulthandler_timeout=3600 \
		tests/test_machines.py \
		tests/test_loop.py tests/test_properties.py tests/test_faults.py tests/test_resilience.py

demo: $(STAMP)
	$(PY) examples/quickstart.py

# check: lint, one code style, and types (strict) -- what the pre-commit hooks run
LINTED := flowdsl tests examples benchmarks docs/conf.py docs/_ext
check: $(STAMP)
	$(PY) -m ruff check $(LINTED)
	$(PY) -m ruff format --check $(LINTED)
	$(PY) -m mypy flowdsl

# docs: the site in docs/_build/html, from docs/*.md and the docstrings; warnings
# (a broken link or reference, a public name without a complete docstring) fail it
docs: $(STAMP)
	rm -rf docs/_build
	$(PY) -m sphinx -q -E -n -W --keep-going -b html docs docs/_build/html
	@echo "the site is in docs/_build/html (open index.html)"

# package: build the sdist and the wheel, install the wheel into a fresh venv
# outside the checkout (under $TMPDIR), and run the quickstart and a spawned flow there
PACKAGE := $(or $(TMPDIR),/tmp)/flowdsl-package
package: $(STAMP)
	rm -rf $(PACKAGE) && mkdir -p $(PACKAGE)
	$(PY) -m build --outdir $(PACKAGE) . > $(PACKAGE)/build.log
	tar -tzf $(PACKAGE)/flowdsl-*.tar.gz | grep -q 'flowdsl/py.typed'
	$(PYTHON) -m venv $(PACKAGE)/venv
	$(PACKAGE)/venv/bin/python -m pip install --quiet $(PACKAGE)/flowdsl-*.whl
	cp examples/quickstart.py tests/package/smoke.py $(PACKAGE)/
	cd $(PACKAGE) && venv/bin/python quickstart.py > quickstart.out && grep -q "last moving average" quickstart.out
	cd $(PACKAGE) && venv/bin/python smoke.py $(CURDIR)

# bench: its own venv with flowdsl from this tree and the peers it is measured against
bench:
	test -x .bench-venv/bin/python || $(PYTHON) -m venv .bench-venv
	.bench-venv/bin/python -m pip install --quiet --upgrade pip
	.bench-venv/bin/python -m pip install --quiet -e '.[ray,io]' 'minipipe==0.1.9' pypeln mpire numpy psutil matplotlib
	.bench-venv/bin/python benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info docs/_build
