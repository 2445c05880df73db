# Two commands do everything on a fresh clone (each makes .venv and installs what it needs):
#   make run    the main job: execute notebook 1 headlessly with the cpu profile, training its model
#               from scratch (~10 min on the embedded photos): checkpoints, metrics.json, eval.json,
#               sr.png in checkpoints/standard_fourier-<hash>/, the executed notebook in
#               checkpoints/standard_fourier/
#   make test   the test suite and every notebook under nbval in the smoke profile (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

# glibc's allocator keeps freed memory for the next tensor instead of handing every large block back to the system
# and faulting it in again: a CPU training step of notebook 1's model 1.24x faster, the test suite's system
# time mostly gone (python benchmarks/allocator.py measures it)
ALLOC  := MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296

.PHONY: run test bench bench-scan quality notebooks install clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(ALLOC) GINR_PROFILE=cpu GINR_TRAIN=1 $(PY) -m jupyter nbconvert --to notebook --execute notebooks/01_standard_fourier.ipynb \
		--ExecutePreprocessor.timeout=-1 --output-dir checkpoints/standard_fourier

# one pytest worker per core (pytest-xdist), each computing on one thread; a test file or notebook stays on one worker,
# except the minutes-long cases that tests/conftest.py queues first, each on its own
test: $(STAMP)
	$(ALLOC) GINR_PROFILE=smoke OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 $(PY) -m pytest -q -rs --durations=15 \
		-n $${TEST_WORKERS:-auto} --dist loadscope tests --nbval-lax notebooks

bench-scan: $(STAMP)
	$(PY) benchmarks/scan.py

bench: bench-scan
	$(PY) benchmarks/encoder.py
	$(PY) benchmarks/decode.py
	$(PY) benchmarks/train_throughput.py

quality: $(STAMP)
	$(PY) benchmarks/quality.py

# the notebooks are their own source (paired with the percent-format .py beside them by jupytext):
# sync the pairs, then execute each on its shipped weights (cpu profile) and commit it shrunk
notebooks: $(STAMP)
	$(VENV)/bin/jupytext --sync notebooks/0*.ipynb
	for nb in notebooks/0*.ipynb; do \
		GINR_PROFILE=cpu GINR_TRAIN=0 $(PY) -m jupyter nbconvert --to notebook --execute $$nb \
			--ExecutePreprocessor.timeout=-1 --output-dir .cache/executed && \
		$(PY) notebooks/_shrink.py .cache/executed/$$(basename $$nb) || exit 1; \
	done

clean:
	rm -rf $(VENV) .cache .pytest_cache
