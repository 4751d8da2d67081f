# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv, install the project with its training extras (PyTorch as the local
# CPU wheel, torch==2.13.0) and run.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BLD    := $(VENV)/bin/bld
RUN    ?= runs/digits
STAMP  := $(VENV)/.installed

.PHONY: install demo test cpp clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[train,dev]'
	touch $@

# Train both models on the built-in digits, export a bundle, sample on the runtime, score it.
# A second run reuses every finished stage (and resumes an interrupted training); FRESH=1
# starts over.
demo: $(STAMP)
	$(BLD) demo --run $(RUN) $(if $(FRESH),--fresh,)

# The C++ runtime's tests (tests/test_cpp_runtime.py) run last and build it first (`make cpp`).
test: $(STAMP)
	$(PY) -m pytest -q

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

clean:
	rm -rf $(VENV) runs $(CPP)/build $(CPP)/build-asan $(CPP)/.deps
