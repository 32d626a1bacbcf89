# Lifeboat. `make demo` runs the showcase on this machine; `make test` runs everything.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test unit lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	$(BIN)/python -m compileall -q toolkit providers >/dev/null
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python examples/demo.py

test: install lint
	$(BIN)/python tests/parallel.py

unit: install
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_units.py tests/test_stackfile.py tests/test_stackfile_fuzz.py tests/test_cli.py

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/objects.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/database.py
	$(BIN)/python bench/failover.py
	$(BIN)/python bench/report.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
