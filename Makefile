# Two commands do everything on a fresh clone (each makes .venv and installs what it needs):
#   make run    the main job: train standard_fourier (cpu profile, ~10 min) on the embedded photos,
#               then evaluate it (checkpoint, metrics.json, eval.json, sr.png in checkpoints/standard_fourier/)
#   make test   the test suite (what CI runs through .ci/run)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test bench-scan install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m ginr_common.train --config standard_fourier --profile cpu --data photos
	$(PY) -m ginr_common.evaluate --checkpoint checkpoints/standard_fourier/best.pt

bench-scan: $(STAMP)
	$(PY) benchmarks/scan.py

test: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) -m pytest -q

clean:
	rm -rf $(VENV) .cache .pytest_cache
