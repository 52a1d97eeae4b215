# Two entry points for a fresh machine: `make quickstart` and `make test`.
# Each creates (once) its own virtual environment in .venv from the project's own files.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: quickstart test lint bench-data bench-speed bench-peers bench-scaling bench-serve bench-insights bench-report clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/intentrec quickstart --out runs/quickstart

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

bench-data: $(STAMP)
	$(BIN)/python bench/data_prepare.py

bench-speed: $(STAMP)
	$(BIN)/python bench/speed_models.py

bench-peers: $(STAMP)
	$(BIN)/python bench/speed.py

bench-scaling: $(STAMP)
	$(BIN)/python bench/scaling.py

bench-report: $(STAMP)
	$(BIN)/python bench/report.py

bench-serve: $(STAMP)
	$(BIN)/python bench/serve.py

bench-insights: $(STAMP)
	$(BIN)/python bench/insights.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
