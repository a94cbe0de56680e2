# `make demo` and `make test` do all set-up on a fresh machine: a virtual environment in .venv with the
# pinned CPU build of torch and the project installed in editable mode.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

.PHONY: install demo test bench gpu-wheels
install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tca-segment demo --out out/demo

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) -m benchmarks.backbone_cost --out out/bench

# The wheels benchmarks/gpu_check.sh carries to a GPU machine without a registry (Python 3.12 there):
# this project's transformers pin and pycocotools, which tca_core needs and that machine lacks.
gpu-wheels:
	python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
		--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d benchmarks/wheels \
		'transformers==5.24.*' pycocotools

