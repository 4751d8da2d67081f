# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv, install the project with its training extras (PyTorch as the local
# CPU wheel, torch==2.13.0) and run.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BLD    := $(VENV)/bin/bld
RUN    ?= runs/digits
STAMP  := $(VENV)/.installed
TRT_STAMP := $(VENV)/.tensorrt

.PHONY: install demo lint test serve cpp clean arm64-check docs

install: $(STAMP)

# The compiled host code (setup.py) is built by the install: a change to its C sources reinstalls.
HOST_SRC := setup.py $(wildcard runtime/bld_runtime/csrc/*.c runtime/bld_runtime/csrc/*.h)
$(STAMP): pyproject.toml $(HOST_SRC)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[train,dev,serving]'
	touch $@

# What the engine tests need on a machine without a GPU: TensorRT-RTX (a real ONNX parser and
# builder that builds plans on the CPU), cuda-python and NVRTC (the device kernel is compiled
# for real), and the lean runtimes of TensorRT 10.16 and 11.4, each in its own folder (both
# are the module `tensorrt_lean`), imported by the tests in subprocesses to check API names.
$(TRT_STAMP): $(STAMP)
	$(PY) -m pip install -q tensorrt-rtx-cu12==1.7.1.116 'cuda-python>=12.6,<13' nvidia-cuda-nvrtc-cu12
	$(PY) -m pip install -q --target $(VENV)/trt-lean/10 tensorrt-lean-cu12==10.16.1.11
	$(PY) -m pip install -q --target $(VENV)/trt-lean/11 tensorrt-lean-cu12==11.4.0.106
	touch $@

# Train both models on the built-in digits, export a bundle, sample on the runtime, score it.
# A second run reuses every finished stage (and resumes an interrupted training); FRESH=1
# starts over.
demo: $(STAMP)
	$(BLD) demo --run $(RUN) $(if $(FRESH),--fresh,)

# Lint and format (ruff) over all the Python code, the strict type check of the runtime (mypy)
# and the one-way layers between the packages (import-linter's contracts, docs/ARCHITECTURE.md),
# configured in pyproject.toml. `make test` runs them before the tests.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# The API reference (pdoc, Google-style docstrings) of every package the `bld` distribution
# installs, into docs/api/ (git-ignored; open docs/api/index.html). A package's __all__, where it
# has one, is its public surface. The Triton models import Triton's own module, so they are
# left out. Any warning pdoc prints (an annotation it cannot resolve, a name in __all__ that does
# not exist, a module that fails to import) fails the target; CI runs it (.ci/run). Then the C
# and C++ headers' reference with doxygen (docs/Doxyfile, into docs/api/cpp/; apt installs it
# where it is missing, as root), also failing on any warning (an undocumented declaration or
# parameter).
DOCS        := docs/api
DOC_MODULES  = $(shell $(PY) -c "from importlib.metadata import distribution as d; \
                 print(' '.join(sorted(d('bld').read_text('top_level.txt').split())))")
docs: $(STAMP)
	rm -rf $(DOCS)
	@echo "pdoc $(DOC_MODULES) -> $(DOCS)/index.html"
	@log=$$($(PY) -m pdoc --docformat google -o $(DOCS) $(DOC_MODULES) '!bld_serving.models' 2>&1); \
	rc=$$?; if [ $$rc -ne 0 ] || [ -n "$$log" ]; then \
	  printf '%s\n' "$$log" >&2; echo "make docs: pdoc failed or warned (above)" >&2; exit 1; fi
	@command -v doxygen >/dev/null || { echo "make docs: installing doxygen (apt)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq doxygen >/dev/null; } \
	  || { echo "make docs: doxygen is missing and apt-get could not install it (run as root)" >&2; exit 1; }
	@echo "doxygen docs/Doxyfile -> $(DOCS)/cpp/index.html"
	@doxygen docs/Doxyfile

# The C++ runtime's tests (tests/test_cpp_runtime.py) run last and build it first (`make cpp`).
test: $(STAMP) lint $(TRT_STAMP)
	$(PY) -m pytest -q

# A real tritonserver (from the nvidia-pytriton wheel, cached in ~/.cache/bld/triton) serving
# the demo bundle on 127.0.0.1; Ctrl-C stops it. See docs/serving.md.
serve: $(STAMP)
	$(PY) -m bld_serving.local_server serve $(RUN)/bundle

# The C++ runtime: its Debian packages and the ONNX Runtime headers (setup_deps.sh), then a
# release build and an AddressSanitizer + UndefinedBehaviorSanitizer build of the library and the
# two programs the bad-input tests run (bld-cpp, bld-probe).
CPP      := runtime/cpp
CPP_ORT  := $(abspath $(CPP)/.deps/onnxruntime)
CPP_JOBS := $(shell nproc 2>/dev/null || echo 2)
cpp:
	$(CPP)/scripts/setup_deps.sh --python $(PY)
	nice -n 10 cmake -S $(CPP) -B $(CPP)/build -DONNXRUNTIME_ROOT=$(CPP_ORT) >/dev/null
	nice -n 10 cmake --build $(CPP)/build -j $(CPP_JOBS)
	nice -n 10 cmake -S $(CPP) -B $(CPP)/build-asan -DONNXRUNTIME_ROOT=$(CPP_ORT) -DBLD_SANITIZE=ON >/dev/null
	nice -n 10 cmake --build $(CPP)/build-asan -j $(CPP_JOBS) --target bld-cpp bld-probe

# The runtime on ARM64 (a Jetson's CPU) under QEMU user emulation, against x86: the arm64 root
# (built once, cached in ~/.cache/bld/arm64), the runtime pip-installed from this checkout, the
# C++ runtime cross-built for aarch64. `make test` runs the same tests. See docs/jetson.md.
arm64-check: $(STAMP)
	$(PY) -m pytest -q tests/test_arm64.py

clean:
	rm -rf $(VENV) runs $(CPP)/build $(CPP)/build-asan $(CPP)/.deps $(DOCS) build
	rm -f runtime/bld_runtime/_host*.so runtime/bld_runtime/_host*.pyd
