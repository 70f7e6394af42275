# vetset: `make demo` runs the main job on the built-in demo data; `make test` runs the tests.
# Both create .venv and install vetset with its dev extras when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.vetset-installed
export FIFTYONE_DO_NOT_TRACK ?= true
export NO_ALBUMENTATIONS_UPDATE ?= 1

.PHONY: install demo lint test test-fast bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/recipes demo --out vetset-demo
	$(BIN)/recipes run full --data vetset-demo/digits --out vetset-runs/demo

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not browser"

bench: $(STAMP)
	for f in benchmarks/*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf vetset-demo vetset-runs build dist *.egg-info
