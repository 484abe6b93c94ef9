# The only entry point: `make run` trains the default config, `make test` runs the suite.
PY := .venv/bin/python
PIP := .venv/bin/pip
STAMP := .venv/.installed
# glibc's dynamic mmap threshold makes each step's MB-sized tensors page-fault in anew.
export MALLOC_MMAP_THRESHOLD_ ?= 33554432
export MALLOC_TRIM_THRESHOLD_ ?= 17179869184

.PHONY: setup run test test-fast lint format size bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[all]'
	touch $(STAMP)

run: setup
	$(PY) -m scaletrain train configs/default.yaml --overwrite

test: setup
	$(PY) -m pytest -x -p no:cacheprovider --durations=30

test-fast: setup  # no multi-process or end-to-end tests (those are marked slow)
	$(PY) -m pytest -x -p no:cacheprovider -m "not slow"

lint: setup
	.venv/bin/ruff check src tests bench examples
	.venv/bin/ruff format --check src tests bench examples

format: setup
	.venv/bin/ruff format src tests bench examples
	.venv/bin/ruff check --fix src tests bench examples

size:
	@find src -name '*.py' | xargs wc -l | sort -n | tail -25

bench: setup
	$(PY) -m bench.run

clean:
	rm -rf .venv runs build *.egg-info
