# `make demo` and `make test` each set up .venv from the pinned requirements on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_WORKDIR ?= workdirs/demo
PYTEST_ARGS ?= -n 2

.PHONY: demo test test-fast setup clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-test.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-test.txt
	@touch $(STAMP)

# Trains SE-ResNet-20 on the embedded digits data from scratch, then prints the result.
demo: $(STAMP)
	rm -rf $(DEMO_WORKDIR)
	$(PY) main.py --config=configs/digits.py --workdir=$(DEMO_WORKDIR) --mode=train

test: $(STAMP)
	$(PY) -m pytest tests $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) workdirs
