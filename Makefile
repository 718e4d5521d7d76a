# moat — the commands a person types. The real build is CMake (CMakeLists.txt);
# this file only strings the steps together. `make help` lists the targets.

BUILD      ?= build
SAN_BUILD  ?= build-san
JOBS       ?= $(shell nproc)
PYTHON     ?= /usr/bin/python3
# Seconds per fuzz target: a short smoke in `make check`, a long run in `make fuzz`.
FUZZ_SMOKE_SECONDS ?= 15
FUZZ_SECONDS       ?= 600
FUZZERS = fuzz_decode fuzz_roundtrip fuzz_props fuzz_topic

.PHONY: help bootstrap build san run check lint unit unit-san blackbox fuzz-smoke fuzz format clean

help:
	@echo "make run         install what is missing, build, and run the main program"
	@echo "make check       install what is missing, build (gcc, and clang with ASan+UBSan),"
	@echo "                 run unit tests, black-box tests and a short fuzz smoke"
	@echo "make fuzz        fuzz every target for FUZZ_SECONDS (default $(FUZZ_SECONDS)) each"
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

# Until the hub (moatd) exists, the main program is the packet decoder: it
# decodes a CONNECT captured from a real client and prints it.
run: build
	@echo "moatd arrives with issue 3; running the MQTT codec's decoder on a captured CONNECT:"
	@$(BUILD)/tools/moat-mqtt-dump --from client --hex tests/fixtures/wire/v5_connect_props.hex

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

lint:
	@scripts/check-banned

check: lint unit unit-san blackbox fuzz-smoke
	@echo "make check: all passed"

format:
	@git ls-files '*.c' '*.h' | xargs clang-format -i

clean:
	@rm -rf $(BUILD) $(SAN_BUILD) .fuzz-out
