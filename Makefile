# Fresh machine: `make demo` (main job on the embedded default) and `make test` (the test suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat setup.py | sha1sum | cut -c1-12)
SYSTEM_TOOLS := ffmpeg espeak-ng sox

.PHONY: setup system demo test test-slow bench clean

# Debian tools: ffmpeg (codecs), espeak-ng (real speech for tests), sox.
system:
	@missing=""; for t in ffmpeg espeak-ng sox; do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system tools:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_TOOLS) >/dev/null; \
	fi

$(STAMP): setup.py
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned, so nothing later pulls a CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	@rm -f $(VENV)/.installed-*; touch $(STAMP)

setup: system $(STAMP)

demo: setup
	$(BIN)/python -m launch.inspect --config=configs/sd15_stage2.py

# pytest exit 5 (no tests collected) is a failure, not a pass.
test: setup
	$(BIN)/python -m pytest -q -m "not slow" --durations=15; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

test-slow: setup
	$(BIN)/python -m pytest -q -m slow --durations=15; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no slow tests"; exit 1; fi; exit $$rc

bench: setup
	$(BIN)/python -m benchmarks.unet_step

clean:
	rm -rf $(VENV) .pytest_cache
