# Every target sets up what it needs: a local .venv, the dependencies, and the compiled
# extension (C++ always; CUDA where nvcc and a CUDA torch exist, no GPU needed).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SOURCES := setup.py pyproject.toml $(wildcard csrc/*.cpp csrc/*.h csrc/cuda/*.cu csrc/cuda/*.cuh)
export MAX_JOBS ?= 2

.PHONY: test test-all sanitize cpu-variants demo bench info build deps clean

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

# The browser test of `wfkern serve`'s page drives Debian's Chromium: installed here when running as root with apt
# (without it that test skips, saying why).
CHROMIUM = @if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	(apt-get update -q && apt-get install -y -q chromium) > $(VENV)/chromium.log 2>&1 \
	|| echo "chromium not installed (see $(VENV)/chromium.log): the page test will skip"; fi

test: info
	$(CHROMIUM)
	$(PY) -m pytest -q -m "not slow"
	$(MAKE) --no-print-directory cpu-variants
	$(RUN_SANITIZE)

test-all: info
	$(CHROMIUM)
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory cpu-variants
	$(RUN_SANITIZE)

# The exactness, bake and drop-in tests again under other CPU kernel choices: ATen's vector ISA, MKL's
# code path on CPUs it does not tune for (AMD takes its AVX2 path) and oneDNN's ISA. A claim that holds
# on one machine's kernels only fails here, not on a user's machine.
CPU_VARIANTS ?= ATEN_CPU_CAPABILITY=default ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2
VARIANT_TESTS ?= tests/test_patch_exact.py tests/test_patch_dropin.py $(wildcard tests/test_export_bake.py)
VARIANT_PATCH_TESTS ?= bit_for_bit or mixed_batch
cpu-variants: build
	@for variant in $(CPU_VARIANTS); do echo "== CPU kernel variant: $$variant"; \
		env $$variant $(PY) -m pytest -q -p no:cacheprovider -m "not slow" $(VARIANT_TESTS) || exit 1; \
		env $$variant $(PY) -m pytest -q -p no:cacheprovider tests/test_patch.py -k "$(VARIANT_PATCH_TESTS)" || exit 1; done

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
