# Two entry points for a fresh clone (they create the virtual environment themselves):
#   make demo   set everything up and run the main job on the embedded synthetic default
#   make test   set everything up and run the whole test suite (what .ci/run calls)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export HF_HUB_OFFLINE := 1

.PHONY: setup demo test

# torch first, from the CPU wheel: anything that depends on torch would otherwise pull a CUDA build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[all]'
	@if [ -f tests/node/package-lock.json ]; then npm ci --prefix tests/node --no-audit --no-fund --loglevel=error; fi
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/lmrec demo --out out/demo

test: setup
	$(PY) -m pytest
