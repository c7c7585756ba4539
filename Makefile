# The two commands of the README, and what they need.
#   make demo   set everything up (creating .venv when missing) and run the offline demo
#   make test   set everything up and run the whole default test suite
# Set-up pins torch/torchvision so pip takes the CPU-capable builds on this machine's disk
# instead of downloading a multi-GB CUDA build; every other version comes from pyproject.toml.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.zoobot-installed
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
DEMO_DIR ?= zoobot_demo
PYTEST_ARGS ?=

.PHONY: setup demo test test-slow docs clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e ".[all,dev]" $(TORCH_PINS)
	touch $(STAMP)

demo: setup
	$(VENV)/bin/zoobot demo --save-dir $(DEMO_DIR)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: setup
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

docs: setup
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) $(DEMO_DIR) site build *.egg-info
