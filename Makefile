# The README's commands. Every target creates or refreshes the virtual environment at .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.dkp-installed
OUT    ?= artifacts/demo

.PHONY: venv test demo lint bench clean

$(STAMP): pyproject.toml setup.py constraints.txt $(wildcard ops/*.cc ops/*.h)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[torch,tflite,bench,test]'
	touch $@

venv: $(STAMP)

# The second TFLite runtime (docs/tflite.md): tflite-runtime 2.14 (numpy<2, no torch), for the parity test on saved
# artifacts that tests/test_tflite_runtime.py runs through tests/tflite_runtime_check.py. Wheels exist for
# CPython 3.8-3.11 (x86_64, aarch64): set PYTHON to one of those if python3 is newer.
TFLITE_RT := .venv-tflite-runtime
$(TFLITE_RT)/.installed:
	$(PYTHON) -m venv $(TFLITE_RT)
	$(TFLITE_RT)/bin/python -m pip install -q 'numpy<2' tflite-runtime==2.14.0
	touch $@

lint: venv
	$(BIN)/python -m ruff check .

test: venv lint $(TFLITE_RT)/.installed
	$(BIN)/python -m pytest

# the main job: the general path on a model that is not one of ours (examples/quickstart.py: the native path)
demo: venv
	$(BIN)/python examples/compress_pretrained.py --out $(OUT)

bench: venv
	$(BIN)/dkp-bench --update-docs

clean:
	rm -rf build *.egg-info dkp_deploy/*.so

# The ARM deployment path, proven on aarch64 binaries under qemu-user (docs/arm.md). Needs Debian/Ubuntu + root
# (or sudo) the first time, to apt-get install g++-aarch64-linux-gnu and qemu-user; downloads cache in .cache/arm.
.PHONY: arm-check
arm-check: venv
	bash scripts/arm/arm_check.sh
