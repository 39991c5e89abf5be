# The two commands a new user needs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: demo test test-tools lint typecheck bench protos clean setup ray gpu-check

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m anypu.sdk.demo

test: $(STAMP) test-tools
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) scripts/typecheck.py
	$(PY) -m pytest tests -m "not gpu"

# The NVIDIA paths on a real GPU (tests/gpu): detection, two jobs sharing one GPU, the cap.
# Fails, never skips, where no GPU answers NVML.
gpu-check: $(STAMP)
	$(PY) -m pytest tests/gpu -m gpu -s -p no:cacheprovider

# mypy over the installed layout (strict for placement, devices, protos, sdk).
typecheck: $(STAMP)
	$(PY) scripts/typecheck.py

# Headless Chromium + chromedriver and Prometheus for the dashboard/metrics tests (Debian).
test-tools:
	sh tests/setup_browser.sh

lint: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

ray: $(STAMP)
	$(PIP) install -q -c constraints.txt -e '.[dev,ray]'

bench: ray
	$(PY) -m benchmarks.overhead

protos: $(STAMP)
	$(PY) -m anypu.protos.generate

clean:
	rm -rf $(VENV) build *.egg-info
