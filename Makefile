# moat — the commands a person types. The real build is CMake (CMakeLists.txt);
# this file only strings the steps together. `make help` lists the targets.

MAKEFLAGS  += --no-print-directory
BUILD      ?= build
SAN_BUILD  ?= build-san
JOBS       ?= $(shell nproc)
PYTHON     ?= /usr/bin/python3
# Seconds per fuzz target: a short smoke in `make check`, a long run in `make fuzz`.
FUZZ_SMOKE_SECONDS ?= 15
FUZZ_SECONDS       ?= 600
FUZZERS = fuzz_decode fuzz_roundtrip fuzz_props fuzz_topic fuzz_policy fuzz_tree fuzz_broker \
          fuzz_record fuzz_command fuzz_queue fuzz_client fuzz_tstore_record fuzz_query

.PHONY: help bootstrap build san run check lint unit unit-san blackbox fuzz-smoke fuzz format clean \
	footprint \
	bench bench-smoke

help:
	@echo "make run         install what is missing, build, and run a development hub"
	@echo "                 (data in .moat-dev/; prints the mosquitto commands that work)"
	@echo "make check       install what is missing, build (gcc, and clang with ASan+UBSan),"
	@echo "                 run unit tests, black-box tests and a short fuzz smoke"
	@echo "make fuzz        fuzz every target for FUZZ_SECONDS (default $(FUZZ_SECONDS)) each"
	@echo "make bench       moatd against mosquitto, 3 repetitions of every scenario (about"
	@echo "                 half an hour; wants a quiet machine; docs/benchmarks.md)"
	@echo "make bench-smoke the same, a few seconds per scenario: checks moat-bench end to end"
	@echo "make footprint   the SDK's code size (x86_64, Cortex-M4) and RAM (docs/sdk-footprint.md)"
	@echo "make build       build with gcc into $(BUILD)/"
	@echo "make san         build with clang, ASan+UBSan and libFuzzer into $(SAN_BUILD)/"
	@echo "make format      clang-format every C file"
	@echo "make clean       remove the build trees"

bootstrap:
	@scripts/bootstrap

build: bootstrap
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

san: bootstrap
	@CC=clang cmake -S . -B $(SAN_BUILD) -DCMAKE_BUILD_TYPE=Debug \
		-DMOAT_SANITIZE=ON -DMOAT_FUZZ=ON >/dev/null
	@cmake --build $(SAN_BUILD) -j $(JOBS)

# A development hub on its embedded defaults: data in .moat-dev/ (made on
# first use, with one device and an operator service), port 8883 (MOAT_PORT).
run: build
	@scripts/dev-hub $(BUILD) .moat-dev

unit: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

unit-san: san
	@cd $(SAN_BUILD) && ctest --output-on-failure -j $(JOBS)

blackbox: build
	@MOAT_BUILD=$(abspath $(BUILD)) $(PYTHON) -m pytest -q tests/blackbox

fuzz-smoke: san
	@scripts/fuzz $(SAN_BUILD) $(FUZZ_SMOKE_SECONDS) $(FUZZERS)

fuzz: san
	@scripts/fuzz $(SAN_BUILD) $(FUZZ_SECONDS) $(FUZZERS)

# moatd against mosquitto with moat-bench (docs/benchmarks.md). Results, a
# Markdown summary and a plot go to bench/results/; BENCH_ARGS adds options
# (bench/compare --help), e.g. BENCH_ARGS="--reps 5 --only fanin".
bench: build
	@mkdir -p bench/results
	@$(PYTHON) bench/compare --build $(BUILD) --markdown bench/results/latest.md \
		--plot bench/results/latest.png $(BENCH_ARGS)

# The SDK core's code size and RAM on x86_64 and Cortex-M4 (docs/sdk-footprint.md).
footprint: bootstrap
	@$(PYTHON) scripts/footprint

bench-smoke: build
	@$(PYTHON) bench/compare --quick --build $(BUILD) $(BENCH_ARGS)

lint:
	@scripts/check-banned

check: lint unit unit-san blackbox fuzz-smoke bench-smoke
	@echo "make check: all passed"

format:
	@git ls-files '*.c' '*.h' | xargs clang-format -i

clean:
	@rm -rf $(BUILD) $(SAN_BUILD) .fuzz-out
