# fastsglr: `make demo` and `make test` set everything up on a fresh machine, then run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEBS   := pkg-config libopencv-dev libturbojpeg0-dev

.PHONY: setup demo test bench-quick clean

setup: $(STAMP)

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
	$(BIN)/pip install -q -c constraints.txt -e '.[ffcv,extras,test]'
	touch $(STAMP)

demo: setup
	$(BIN)/python -m fastsglr.demo --out runs/demo

test: setup
	$(BIN)/python -m pytest -q

bench-quick: setup
	$(BIN)/python bench/kernels.py --quick

clean:
	rm -rf $(VENV) runs build *.egg-info
