# gpumesh: two commands on a fresh machine.
#   make demo   set everything up, then run the whole story on an embedded local devnet
#   make test   set everything up, then run every test (contracts, layering, Python)
# Every target is idempotent; set-up steps re-run only when their inputs change.

SHELL      := /bin/bash
PYTHON     ?= python3.11
VENV       := .venv
PY         := $(VENV)/bin/python
PIP        := $(VENV)/bin/pip
GPUMESH    := $(VENV)/bin/gpumesh
FORGE      := node_modules/.bin/forge
PYTEST_ARGS ?=
export PATH := $(CURDIR)/node_modules/.bin:$(PATH)

.PHONY: setup venv npm contracts test test-contracts test-python lint demo bench clean

setup: venv npm contracts browser

# Debian's chromium for the explorer's browser test (tests/integration/explorer/test_browser.py, driven by
# playwright's bundled driver: no browser download). Installed with apt-get where it is missing and we are
# root; elsewhere the test is skipped, and says so.
CHROMIUM := /usr/bin/chromium
.PHONY: browser
browser:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium (apt-get) for the explorer's browser test"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null; }; \
	else \
	  echo "note: $(CHROMIUM) is missing and cannot be installed here (needs root and apt-get): the explorer's browser test will be skipped"; \
	fi

# torch flavour: `cpu` (the 2.13.0+cpu wheel, ~0.2 GB) on a machine without an NVIDIA GPU, `cuda` (the CUDA build
# from the registry, ~3.2 GB of nvidia-* wheels) where `nvidia-smi` answers. Override: make setup TORCH=cpu|cuda.
# Where the registry lacks the +cpu wheel, pip retries on TORCH_CPU_INDEX (PyTorch's CPU wheel index).
# Each switch reinstalls torch (--upgrade moves a +cpu build to the CUDA one); stamps: .venv/.installed-FLAVOUR.
TORCH           ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)
TORCH_CPU_PIN   := torch==2.13.0+cpu
TORCH_CUDA_PIN  := torch>=2.13.0,<=2.14.1
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
ifeq ($(filter $(TORCH),cpu cuda),)
$(error TORCH=$(TORCH): use TORCH=cpu or TORCH=cuda)
endif
# pip's quiet install, minus setuptools' "Editable installation" notice (a block of "!!" lines warning
# about folders named like the package; ours are mapped by setup.py, so the user cannot act on it).
PIP_QUIET := PYTHONWARNINGS='ignore:Editable installation' $(PIP) install -q

venv: $(VENV)/.installed-$(TORCH)
$(VENV)/.installed-$(TORCH): pyproject.toml setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip >/dev/null 2>&1 || true
	@echo "torch: $(TORCH) build (override: make setup TORCH=cpu|cuda)"
ifeq ($(TORCH),cpu)
	$(PIP_QUIET) '$(TORCH_CPU_PIN)' 2>/dev/null || $(PIP_QUIET) '$(TORCH_CPU_PIN)' --extra-index-url $(TORCH_CPU_INDEX)
else
	$(PIP_QUIET) --upgrade '$(TORCH_CUDA_PIN)'
endif
	$(PIP_QUIET) -e '.[dev]'
	@rm -f $(VENV)/.installed $(VENV)/.installed-*
	@touch $@

npm: node_modules/.installed
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The shipped ABIs (client/chain/abi) are re-exported from every build, so they never go stale.
contracts: venv npm
	$(FORGE) build --quiet
	$(PY) -m gpumesh.client.chain.export_abi

# import-linter cannot walk setuptools' editable finder, so it reads the packages through a
# folder of links that mirrors the installed layout (gpumesh/client -> client/, ...).
lint: venv
	@rm -rf build/lint && mkdir -p build/lint/gpumesh && touch build/lint/gpumesh/__init__.py
	@for d in client node ipfs; do ln -sfn ../../../$$d build/lint/gpumesh/$$d; done
	PYTHONPATH=build/lint $(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check client node ipfs tests bench

test-contracts: contracts
	$(FORGE) test

test-python: venv contracts
	$(PY) -m pytest $(PYTEST_ARGS)

# The end-to-end scenarios again on Hardhat's node (npm hardhat@2, EDR): the same tests, unchanged,
# against a second EVM node (tests/chain_node.py). `make test-hardhat HARDHAT_TESTS=tests/integration`
# runs every integration test there.
HARDHAT_TESTS ?= tests/integration/chain tests/integration/poster tests/integration/watchtower
.PHONY: test-hardhat
test-hardhat: venv contracts
	GPUMESH_TEST_CHAIN=hardhat $(PY) -m pytest $(HARDHAT_TESTS) $(PYTEST_ARGS)

test: setup lint test-contracts slither test-python test-hardhat

# Slither needs web3 < 8, so it lives in its own virtualenv. It compiles with the npm solc through
# forge into .venv-slither/out (never touching contracts/out) and fails on any high-severity finding;
# medium ones are fixed or explained at the site (slither-disable-next-line ... -- why).
SLITHER_VENV := .venv-slither
SLITHER_ENV  := FOUNDRY_OUT=$(SLITHER_VENV)/out FOUNDRY_CACHE_PATH=$(SLITHER_VENV)/cache
.PHONY: slither
slither: npm $(SLITHER_VENV)/.installed
	$(SLITHER_ENV) $(SLITHER_VENV)/bin/slither . --compile-force-framework foundry \
	  --filter-paths "node_modules|contracts/vendor|contracts/test|contracts/script" \
	  --exclude-informational --exclude-low --fail-high
$(SLITHER_VENV)/.installed:
	@test -x $(SLITHER_VENV)/bin/python || $(PYTHON) -m venv $(SLITHER_VENV)
	$(SLITHER_VENV)/bin/pip install -q slither-analyzer==0.11.6
	@touch $@

demo: setup
	$(GPUMESH) demo run

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf contracts/out contracts/cache .pytest_cache .hypothesis
