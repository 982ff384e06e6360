# The two set-up commands of the README: `make demo` (the whole pipeline on the embedded default)
# and `make test` (the test suite). Both create the virtual environment on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint clean-demo

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned to the build that lies on the project machines' disk.
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/dvc repro

# One test process per core (pytest-xdist; a test file's tests stay in one process, so its module fixtures are
# built once), each at one torch thread: two processes at two threads each would oversubscribe the cores and
# stall in spin-waits. On 2 cores (CI, fresh clone): 8.4 min instead of 12.6 min one process at a time.
test: $(STAMP)
	OMP_NUM_THREADS=1 PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -q -n auto --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check pipeline stages tests benchmarks

clean-demo:
	rm -rf data/world data/teacher data/student data/work data/runs data/report
