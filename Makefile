# Two commands do all the set-up on a fresh machine:
#   make demo   installs the runtime into .venv and runs the main job (Elman's sentences, built in)
#   make test   installs the runtime and the test extra into .venv and runs lint and the test suite
# (make bench installs the benchmark extra.) Each extra installs on top of the runtime, without a rebuild.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stamp-install
EXTRAS := $(VENV)/.stamp-extra
FAST_SOURCES := $(wildcard CMakeLists.txt src/rnnlab/fast/*.cc src/rnnlab/fast/*.h src/rnnlab/fast/CMakeLists.txt)

.PHONY: demo test install lint bench clean

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The runtime alone, with the engine's build tools: no PyTorch, no Keras.
$(STAMP): $(BIN)/python pyproject.toml $(FAST_SOURCES)
	$(BIN)/pip install -q "scikit-build-core>=0.10" "cmake>=3.24" ninja "jax>=0.5" "ml_dtypes>=0.5,<0.7" \
	    onednn-cpu-gomp==2023.2.0 onednn-devel-cpu-gomp==2023.2.0
	$(BIN)/pip install -q --no-build-isolation -e .
	touch $(STAMP)

# An extra's requirements, read from pyproject.toml (rnnlab itself stays as built). torch first:
# `torch==2.13.0` is a CPU wheel on disk; any other spelling downloads a CUDA build.
$(EXTRAS)-%: $(STAMP) pyproject.toml
	$(BIN)/python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))\
	    ['project']['optional-dependencies']['$*'], sep='\n')" > $(VENV)/requirements-$*.txt
	if grep -q '^torch' $(VENV)/requirements-$*.txt; then $(BIN)/pip install -q torch==2.13.0; fi
	$(BIN)/pip install -q -r $(VENV)/requirements-$*.txt
	touch $@

demo: $(STAMP)
	$(BIN)/rnnlab demo

lint: $(EXTRAS)-test
	$(BIN)/ruff check .

# Two workers, each taking whole files (a file's fixtures are made once, and two files' compilations
# overlap).
test: $(EXTRAS)-test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# The speed benchmark (rnnlab.bench); its JSON goes to ./speed.json.
bench: $(EXTRAS)-bench
	$(BIN)/python benchmarks/speed.py

clean:
	rm -rf $(VENV) build
