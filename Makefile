# The two quick-start commands of the README; each sets up .venv on a fresh machine.
# torch is pinned to the CPU build through constraints.txt.
VENV := .venv
PYTHON := $(VENV)/bin/python

.PHONY: demo compare test lint bench

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --constraint constraints.txt --editable ".[test]"
	touch $@

# the lab's quick run of every experiment; the report lands in adamkit-lab/index.html
demo: $(VENV)/.installed
	$(VENV)/bin/adamkit demo

compare: $(VENV)/.installed
	$(PYTHON) examples/quickstart.py

bench: $(VENV)/.installed
	$(PYTHON) benchmarks/step.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests examples benchmarks
	$(VENV)/bin/ruff format --check src tests examples benchmarks

test: lint
	$(PYTHON) -m pytest -n auto --dist loadfile
