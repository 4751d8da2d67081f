# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv, install the project with its training extras (PyTorch as the local
# CPU wheel, torch==2.13.0) and run.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BLD    := $(VENV)/bin/bld
RUN    ?= runs/digits
STAMP  := $(VENV)/.installed

.PHONY: install demo test serve clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[train,dev,serving]'
	touch $@

# Train both models on the built-in digits, export a bundle, sample on the runtime, score it.
# A second run reuses every finished stage (and resumes an interrupted training); FRESH=1
# starts over.
demo: $(STAMP)
	$(BLD) demo --run $(RUN) $(if $(FRESH),--fresh,)

test: $(STAMP)
	$(PY) -m pytest -q

# A real tritonserver (from the nvidia-pytriton wheel, cached in ~/.cache/bld/triton) serving
# the demo bundle on 127.0.0.1; Ctrl-C stops it. See docs/serving.md.
serve: $(STAMP)
	$(PY) -m bld_serving.local_server serve $(RUN)/bundle

clean:
	rm -rf $(VENV) runs
