# fastsglr: `make demo` and `make test` set everything up on a fresh machine, then run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEBS   := pkg-config libopencv-dev libturbojpeg0-dev
# A single-node SLURM that tests/test_grid.py starts, to run a grid through `reproduce --launcher slurm` for real.
TESTDEBS := slurm-wlm
# The GPU box's torch (2.11, with triton 3.6) and no FFCV, as there: `make test` runs the fast engine's, the graph
# census', AWP's and the kernels' tests under it too. The PyPI wheel is a CUDA build that runs on a CPU-only machine.
VENV211  := .venv-torch211
STAMP211 := $(VENV211)/.installed
TESTDEPS := $(shell grep -E '^(numpy|scikit-learn|tqdm|pytest|pytest-benchmark)==' constraints.txt)
TESTS211 := tests/test_fast_engine.py tests/test_graph_census.py tests/test_awp.py tests/test_distill.py tests/test_kernels.py tests/test_kernels_aot.py

.PHONY: setup setup-torch211 setup-test-debs demo test bench-quick clean

setup: $(STAMP)

setup-torch211: $(STAMP211)

# FFCV compiles against OpenCV and libjpeg-turbo from Debian (pip's opencv is not enough).
$(STAMP): setup.py constraints.txt
	@missing=$$(for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "fastsglr needs Debian packages: run  sudo apt-get install -y $$missing  then make again"; exit 1; \
	  fi; \
	fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -c constraints.txt -e '.[ffcv,extras,slurm,test]'
	touch $(STAMP)

# Test-only Debian packages; without root the SLURM test skips and says why.
setup-test-debs:
	@missing=$$(for p in $(TESTDEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(STAMP211): setup.py constraints.txt
	test -x $(VENV211)/bin/python || $(PYTHON) -m venv $(VENV211)
	$(VENV211)/bin/pip install -q --upgrade pip setuptools wheel
	$(VENV211)/bin/pip install -q torch==2.11.0 $(TESTDEPS)
	$(VENV211)/bin/pip install -q --no-deps -e .
	touch $(STAMP211)

demo: setup
	$(BIN)/python -m fastsglr.demo --out runs/demo

test: setup setup-torch211 setup-test-debs
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q
	$(VENV211)/bin/python -m pytest -q $(TESTS211)

bench-quick: setup
	$(BIN)/python bench/kernels.py --quick

clean:
	rm -rf $(VENV) $(VENV211) runs build *.egg-info
