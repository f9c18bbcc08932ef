# `make demo` and `make test` each set up .venv from the pinned requirements on first use.
# Bytecode is compiled once, in parallel, after the install (compileall), not by pip file by
# file: with PYTHONDONTWRITEBYTECODE set (as in many CI environments) nothing would ever write
# it, and every process would compile TensorFlow's and jax's sources again (6 s of CPU each).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_WORKDIR ?= workdirs/demo
PYTEST_ARGS ?= -n 2 --dist loadgroup

.PHONY: demo test lint format setup clean mutate

setup: $(STAMP)

# libtpu (requirements-tpu.txt) is the TPU compiler that --mode=compile and its tests run on
# this host; it attaches to no device unless a TPU is there.
$(STAMP): requirements.txt requirements-test.txt requirements-lint.txt requirements-tpu.txt \
  pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile -r requirements.txt -r requirements-test.txt \
	  -r requirements-lint.txt -r requirements-tpu.txt
	# se_flax itself, editable: importable from a notebook or script anywhere, this checkout's code.
	$(PY) -m pip install --quiet --no-compile --no-deps -e .
	$(PY) -m compileall -qq -j 0 $(VENV)/lib > /dev/null || true
	@touch $(STAMP)

# Trains SE-ResNet-20 on the embedded digits data from scratch, then prints the result.
demo: $(STAMP)
	rm -rf $(DEMO_WORKDIR)
	$(PY) main.py --config=configs/digits.py --workdir=$(DEMO_WORKDIR) --mode=train

test: $(STAMP)
	$(PY) -m pytest tests $(PYTEST_ARGS)

# The formatter's and the linter's verdicts (pyproject.toml: [tool.yapf], [tool.ruff]); `make
# format` applies the formatter and sorts imports (an unused import is left to a person: some are
# imported for what importing them registers).
LINTED := se_flax configs experiments tests benchmarks main.py
lint: $(STAMP)
	$(VENV)/bin/yapf --diff --recursive --parallel $(LINTED)
	$(VENV)/bin/ruff check $(LINTED)

format: $(STAMP)
	$(VENV)/bin/ruff check --select I --fix --quiet $(LINTED)
	$(VENV)/bin/yapf --in-place --recursive --parallel $(LINTED)

# Mutation testing with mutmut (not part of `make test`): each core module against its own
# test files, on one core, in a copy of the tree under mutants/<name>/. Results go to
# mutants/<name>.txt; `make mutate MUTATE=optim` runs one. docs/testing.md has the kill rates.
# A mutant whose tests run past 5x (their clean time + 30 s) times out and counts as caught.
# mutmut's clean time leaves out fixtures (preparing the digits data, building pipelines): with
# its default constant of 1 s, tests that only take long to set up timed out without failing.
MUTATE ?= layers blocks mapping optim augment step
# A module's sources are separated by commas.
comma := ,
MUTATE_layers := se_flax/layers/* | tests/layers tests/models/test_drop_path.py
MUTATE_blocks := se_flax/models/blocks.py,se_flax/models/unit.py | tests/models/test_blocks.py tests/models/test_drop_path.py
MUTATE_mapping := se_flax/convert/mapping.py | tests/convert/test_mapping.py
MUTATE_optim := se_flax/train/optim.py | tests/train/test_optim.py tests/train/test_recipe_optim.py
MUTATE_augment := se_flax/data/augment.py | tests/data/test_augment.py tests/data/test_augment_edges.py tests/data/test_augment_epochs.py tests/data/test_erasing.py
# The fork server imports the tests once (warm-up `collect`) and forks a process per mutant.
# A forked TensorFlow hangs when a tf.data pipeline fails in it, so augment's fork server
# imports nothing: each mutant's process imports TensorFlow itself (about 10 s a mutant).
MUTATE_WARMUP_augment := none
MUTATE_step := se_flax/train/step.py | tests/train/test_step.py tests/train/test_recipe_step.py tests/train/test_recipe_loss.py

define mutate_one
	rm -rf mutants/$(1) && mkdir -p mutants/$(1)
	tar -cf - --exclude=./.venv --exclude=./mutants --exclude=./workdirs . | tar -C mutants/$(1) -xf -
	printf '[mutmut]\nsource_paths = se_flax/\nonly_mutate =\n  %b\nalso_copy =\n  pyproject.toml\n  configs/\n  experiments/\n  main.py\nprocess_isolation = forkserver\nforkserver_warmup = %s\ntimeout_multiplier = 5\ntimeout_constant = 30\npytest_add_cli_args_test_selection =\n%b' \
	  '$(subst $(comma),\n  ,$(strip $(word 1,$(subst |, ,$(MUTATE_$(1))))))' \
	  '$(or $(MUTATE_WARMUP_$(1)),collect)' \
	  '$(foreach t,$(wordlist 2,99,$(subst |, ,$(MUTATE_$(1)))),  $(t)\n)' > mutants/$(1)/setup.cfg
	cd mutants/$(1) && $(CURDIR)/$(PY) -m mutmut run --max-children 1 > ../$(1).log 2>&1; \
	  $(CURDIR)/$(PY) -m mutmut results --all true > ../$(1).txt
	@awk -F': ' '{n[$$2]++} END {c = n["killed"] + n["timeout"] + n["segfault"]; \
	  t = NR - n["not checked"] - n["skipped"]; printf "$(1): %d mutants, %d caught (%d killed, %d timed out), %d survived, %d without tests, %d not run: %.1f%% caught\n", \
	  NR, c, n["killed"], n["timeout"], n["survived"], n["no tests"], n["not checked"], t ? 100 * c / t : 0}' mutants/$(1).txt | tee mutants/$(1).summary

endef

mutate: $(STAMP)
	$(foreach name,$(MUTATE),$(call mutate_one,$(name)))

clean:
	rm -rf $(VENV) workdirs
