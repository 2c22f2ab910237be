# Tally: `make test` runs every test, `make demo` runs the pipeline on the embedded store.
# Both install the system packages they need first (scripts/install-deps.sh); `make test` and
# `make bench` include PostgreSQL.

SWIFT ?= swift
# In CI, warnings are errors (Package.swift reads TALLY_STRICT).
export TALLY_STRICT ?= $(if $(CI),1,)

.PHONY: deps deps-postgres deps-tools check-deploy build build-release test format lint demo bench fuzz fuzz-build fuzz-seeds clean

deps:
	@./scripts/install-deps.sh

# The tests and benchmarks run PostgreSQL (the ledger's cluster backend) as well.
deps-postgres:
	@TALLY_NEEDS_POSTGRES=1 ./scripts/install-deps.sh

# make test also needs the tools that check deploy/ and the HTTP APIs: Prometheus, promtool,
# systemd-analyze, Chromium and a Python venv (.build-tools/venv) with kubernetes-validate,
# dockerfile-parse, schemathesis and hypothesis.
deps-tools:
	@TALLY_NEEDS_POSTGRES=1 TALLY_NEEDS_TOOLS=1 ./scripts/install-deps.sh

# Every file in deploy/ checked by a real tool (deploy/README.md).
check-deploy: deps-tools
	@./scripts/check-deploy.sh

build: deps
	$(SWIFT) build

# Release binaries as deployed: scripts/release-link-flags prints the link flags (read by the
# Dockerfile too, and explained there): the Swift runtime and libstdc++ linked in, lld with packed
# relative relocations, no dynamic export of every symbol. An idle agent's resident memory:
# 22.8 MiB with the default dynamic build, 15.4 with these flags, ~12.5 with the agent's functions
# laid out by scripts/agent.order (`tally-bench agent` prints it).
# Evaluated where used (=, not :=): the script prepares a folder under .build.
RELEASE_LINK_FLAGS = $(shell scripts/release-link-flags)

build-release: deps
	$(SWIFT) build -c release $(RELEASE_LINK_FLAGS)

# scripts/agent.order, the layout of the agent's code (read by scripts/release-link-flags), from
# a traced run of the release agent (scripts/agent-order/record.py), then the agent linked with it
# (SwiftPM does not see the file as an input: the binary is removed so that it is linked again).
# Worth redoing when the agent's start or idle path changed much: `tally-bench agent` shows it as
# the idle RSS.
.PHONY: agent-order
agent-order: build-release
	python3 scripts/agent-order/record.py
	rm -f .build/release/tally-agent
	$(SWIFT) build -c release $(RELEASE_LINK_FLAGS) --product tally-agent

# Last, the release build that make demo and make bench use: it compiles without the test
# products (no Testing module), and once a test-only import broke it while every test passed.
test: deps-tools lint check-deploy
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build
	$(MAKE) build-release

# Chaos (Tests/EndToEndTests/ChaosTests.swift): the real binaries under random faults (kills,
# cut, delayed, duplicated and reordered frames, lost acks, full disks, agents' clocks stepped,
# client retries; PostgreSQL killed and made read-only too in the cluster form), checked against what the agents acknowledged. `make test` runs the short
# form (24 fault cycles, on SQLite and on the two-collector cluster); `make chaos DURATION=600
# SEED=42` injects faults for DURATION seconds on each (default 600) from SEED (default: random;
# printed, it replays the fault schedule).
DURATION ?= 600
.PHONY: chaos
chaos: deps-postgres
	$(SWIFT) build --build-tests
	TALLY_CHAOS_DURATION=$(DURATION) TALLY_CHAOS_SEED=$(SEED) $(SWIFT) test --skip-build --filter 'ChaosTests/everyAcknowledged'

# Formatting (.swift-format at the root): `make format` rewrites, `make lint` checks (part of
# `make test`).
format:
	$(SWIFT) format format --in-place --recursive Sources Tests Package.swift FuzzTesting/Sources FuzzTesting/Package.swift

lint:
	$(SWIFT) format lint --strict --recursive Sources Tests Package.swift FuzzTesting/Sources FuzzTesting/Package.swift

# Fuzzing with libFuzzer (FuzzTesting/README.md). `make test` replays the kept corpus
# (FuzzTesting/Corpus) in the normal build; `make fuzz SECONDS=N` builds the sanitized targets
# and runs each for N seconds, one at a time (`FUZZ_TARGETS=FuzzFrameDecoder` for one), and fails
# when any finds a crash or a hang. `make fuzz-seeds` rewrites the corpus seeds from the encoders.
SECONDS ?= 60
FUZZ_TARGETS ?= FuzzFrameDecoder FuzzBatchPayloadDecoder FuzzSpoolRecord FuzzSpoolRecovery FuzzEventJSON \
	FuzzPricingConfig FuzzAgentConfig FuzzCollectorConfig FuzzAggregateLog
FUZZ_BUILD = cd FuzzTesting && $(SWIFT) build -c debug --scratch-path $(CURDIR)/.build-fuzz -Xswiftc -sanitize=fuzzer,address

fuzz-build: deps
	$(FUZZ_BUILD)

fuzz: fuzz-build
	./FuzzTesting/fuzz.sh "$$($(FUZZ_BUILD) --show-bin-path)" $(SECONDS) $(FUZZ_TARGETS)

fuzz-seeds: deps
	TALLY_FUZZ_WRITE_SEEDS=1 $(SWIFT) test --filter FuzzSeeds

demo: build-release
	@./scripts/demo.sh

bench: deps-postgres build-release
	@./scripts/bench.sh

clean:
	rm -rf .build .build-fuzz tally-data tally-spool FuzzTesting/.artifacts
