# Tally: `make test` runs every test, `make demo` runs the pipeline on the embedded store.
# Both install the system packages they need first (scripts/install-deps.sh); `make test` and
# `make bench` include PostgreSQL.

SWIFT ?= swift
# In CI, warnings are errors (Package.swift reads TALLY_STRICT).
export TALLY_STRICT ?= $(if $(CI),1,)

.PHONY: deps deps-postgres build build-release test format lint demo bench clean

deps:
	@./scripts/install-deps.sh

# The tests and benchmarks run PostgreSQL (the ledger's cluster backend) as well.
deps-postgres:
	@TALLY_NEEDS_POSTGRES=1 ./scripts/install-deps.sh

build: deps
	$(SWIFT) build

build-release: deps
	$(SWIFT) build -c release

test: deps-postgres lint
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

# Formatting (.swift-format at the root): `make format` rewrites, `make lint` checks (part of
# `make test`).
format:
	$(SWIFT) format format --in-place --recursive Sources Tests Package.swift

lint:
	$(SWIFT) format lint --strict --recursive Sources Tests Package.swift

demo: build-release
	@./scripts/demo.sh

bench: deps-postgres build-release
	@./scripts/bench.sh

clean:
	rm -rf .build tally-data tally-spool
