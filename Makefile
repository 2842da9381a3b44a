# The two set-up commands: `make demo` and `make test`. Each makes .venv when missing and
# installs what it needs, so both work on a fresh machine with Python 3.10+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# One stamp per extra: reinstall when pyproject.toml changes.
$(VENV)/.stamp-%: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[$*]"
	touch $@

demo: $(VENV)/.stamp-examples
	$(BIN)/python examples/train_mlp.py
	$(BIN)/python examples/frozen_layer.py
	$(BIN)/python examples/build_model.py
	$(BIN)/python examples/train_rnn.py

lint: $(VENV)/.stamp-test
	$(BIN)/ruff check ecliptic tests examples benchmarks

test: $(VENV)/.stamp-test $(VENV)/.stamp-examples lint
	$(BIN)/python -m pytest -n 2 -q tests

bench: $(VENV)/.stamp-bench
	$(BIN)/python benchmarks/dispatch.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
