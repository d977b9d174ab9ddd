# Everyday commands. `make demo` and `make test` are the README's quick start.
PYTHON ?= python3
# Extra arguments for bench and bench-quick, e.g. ARGS="--baseline HEAD~3".
ARGS ?=

.PHONY: install demo test lint bench bench-quick

install:
	$(PYTHON) -m pip install -q -e '.[test,fast]'

demo:
	$(PYTHON) -m pip install -q -e '.[fast]'
	$(PYTHON) -m pyproxy demo

test: install
	$(PYTHON) -m pytest; status=$$?; [ $$status -ne 5 ] || { echo "no tests collected" >&2; exit 1; }; exit $$status

lint:
	ruff check . && ruff format --check .

bench:
	$(PYTHON) -m pip install -q -e '.[test,fast,bench]'
	$(PYTHON) -m bench.run $(ARGS)

bench-quick:
	$(PYTHON) -m pip install -q -e '.[test,fast,bench]'
	$(PYTHON) -m bench.run --quick $(ARGS)
