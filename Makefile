# Every target sets up what it needs: a local .venv, the dependencies, and the compiled
# extension (C++ always; CUDA where nvcc and a CUDA torch exist, no GPU needed).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SOURCES := setup.py pyproject.toml $(wildcard csrc/*.cpp csrc/*.h csrc/cuda/*.cu csrc/cuda/*.cuh)
export MAX_JOBS ?= 2

.PHONY: test test-all sanitize demo bench info build deps clean

$(VENV)/.deps: requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

$(VENV)/.built: $(VENV)/.deps $(SOURCES)
	@echo "building wfkern._C (C++ and, where a toolkit exists, CUDA; log: $(VENV)/build.log) ..."
	$(PY) -m pip install -v --no-build-isolation --no-deps -e . > $(VENV)/build.log 2>&1 \
		|| (tail -n 60 $(VENV)/build.log; exit 1)
	@grep "wfkern setup:" $(VENV)/build.log || true
	@if grep -q "csrc/cuda/mask_epilogue.cu" $(VENV)/build.log; then echo "CUDA sources compiled: csrc/cuda/*.cu"; \
		else echo "CUDA sources not compiled (see the wfkern setup line above)"; fi
	touch $@

deps: $(VENV)/.deps
build: $(VENV)/.built

info: build
	$(PY) -c "import wfkern; print(wfkern.describe_backend())"

# The test suite (what CI runs), then the sanitizer stage (SANITIZE=0 skips it). Slow integration
# runs: make test-all.
SANITIZE ?= 1
RUN_SANITIZE = @if [ "$(SANITIZE)" != 0 ] && [ "$${WFKERN_CPP:-1}" != 0 ]; then $(MAKE) --no-print-directory sanitize; \
	else echo "sanitizer stage skipped (SANITIZE=$(SANITIZE), WFKERN_CPP=$${WFKERN_CPP:-1})"; fi

test: info
	$(PY) -m pytest -q -m "not slow"
	$(RUN_SANITIZE)

test-all: info
	$(PY) -m pytest -q
	$(RUN_SANITIZE)

# The C++ CPU ops built with AddressSanitizer + UndefinedBehaviorSanitizer into build/asan/ (a
# separate CPU-only build; the in-place wfkern/_C*.so is never touched), then the op, property,
# concurrency and patch tests run against it with libasan preloaded; any sanitizer report fails.
# SANITIZE_ARGS replaces the default pytest arguments, e.g. SANITIZE_ARGS="-x tests/test_ops_property.py";
# one step alone: $(PY) tools/sanitize.py build | test [PYTEST ARGS].
SANITIZE_ARGS ?=
sanitize: deps
	$(PY) tools/sanitize.py all $(SANITIZE_ARGS)

# The main job: train a small classifier on the embedded digits, untrain every class in one
# round, and show per-sample forgetting. Its files go to runs/demo/ (ignored by git).
demo: build
	$(VENV)/bin/wfkern demo

# CPU benchmarks (pytest-benchmark); JSON under .benchmarks/
bench: build
	mkdir -p .benchmarks
	$(PY) -m pytest bench -q -p no:cacheprovider --benchmark-only --benchmark-json=.benchmarks/cpu.json
	$(PY) bench/summary.py .benchmarks/cpu.json
	cd bench && ../$(PY) paired.py --device cpu

clean:
	rm -rf build $(VENV)/.built wfkern/_C*.so
