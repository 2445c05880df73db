# Two commands do everything on a fresh clone (each makes .venv and installs what it needs):
#   make run    the main job (for now: the selective-scan benchmark)
#   make test   the test suite (what CI runs through .ci/run)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test bench install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) benchmarks/scan.py

test: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) -m pytest -q

bench: run

clean:
	rm -rf $(VENV) .cache .pytest_cache
