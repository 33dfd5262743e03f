# Two commands for a newcomer: `make scale` (the main job) and `make test` (the tests).
# Both create .venv with the system python3 and install the project into it first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup scale test lint bench ui report clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: any other spec pulls a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,torchsim]'
	touch $(STAMP)

setup: $(STAMP)

scale: $(STAMP)
	$(BIN)/python -m engine.scale --axis params

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

ui: $(STAMP)
	$(BIN)/python -m engine.ui

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
