# The two set-up commands: `make demo` and `make test`. Each makes .venv when missing and
# installs what it needs, so both work on a fresh machine with Python 3.10+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo examples test lint typecheck bench docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# One stamp per extra: reinstall when pyproject.toml changes.
$(VENV)/.stamp-%: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[$*]"
	touch $@

# The demo: a small CNN on scikit-learn's digits (summary, training, checkpoint, plots).
demo: $(VENV)/.stamp-examples
	$(BIN)/python examples/demo_digits.py

# The other example scripts, each a short end-to-end run.
examples: $(VENV)/.stamp-examples
	$(BIN)/python examples/train_mlp.py
	$(BIN)/python examples/frozen_layer.py
	$(BIN)/python examples/build_model.py
	$(BIN)/python examples/train_rnn.py
	$(BIN)/python examples/stateful.py
	$(BIN)/python examples/parallelism.py
	$(BIN)/python examples/multiprocess.py

# The documentation site, built in strict mode (broken links and references fail).
docs: $(VENV)/.stamp-docs
	$(BIN)/mkdocs build --strict

lint: $(VENV)/.stamp-test
	$(BIN)/ruff check ecliptic tests examples benchmarks
	$(BIN)/ruff format --check ecliptic tests examples benchmarks

# pyright (standard mode, settings in pyrightconfig.json) over the package, tests and benchmarks.
typecheck: $(VENV)/.stamp-test
	$(BIN)/pyright

test: $(VENV)/.stamp-test $(VENV)/.stamp-examples $(VENV)/.stamp-docs lint typecheck
	$(BIN)/python -m pytest -n 2 -q tests

bench: $(VENV)/.stamp-bench
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build dist site demo-out *.egg-info .pytest_cache .ruff_cache
