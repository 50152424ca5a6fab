# Fresh machine: `make demo` (main job on the embedded default) and `make test` (the test suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SETUP_HASH := $(shell cat setup.py | sha1sum | cut -c1-12)
STAMP := $(VENV)/.installed-$(SETUP_HASH)
TEST_STAMP := $(VENV)/.installed-test-$(SETUP_HASH)
SYSTEM_TOOLS := ffmpeg espeak-ng sox

.PHONY: setup setup-test system demo checkpoint test test-slow bench clean

# Debian tools: ffmpeg (codecs), espeak-ng (real speech for tests), sox.
system:
	@missing=""; for t in ffmpeg espeak-ng sox; do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system tools:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_TOOLS) >/dev/null; \
	fi

# The runtime (what `make demo` and `make checkpoint` need); the test extras (torch, diffusers, pytest)
# only for tests and benchmarks.
$(STAMP): setup.py
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	@rm -f $(VENV)/.installed-*; touch $(STAMP)

# torch first, pinned, so nothing later pulls a CUDA build.
$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	@touch $(TEST_STAMP)

setup: system $(STAMP)

setup-test: setup $(TEST_STAMP)

# The embedded default: the shipped synthetic checkpoint renders the 8 emotions x 3 intensities.
demo: setup
	$(BIN)/python -m launch.demo --out=demo_out

# Retrains the shipped checkpoint (data/checkpoints/synthetic) from scratch; README gives the timings.
RUNS ?= workdirs/synthetic
checkpoint: setup
	$(BIN)/python -m launch.train_expr --config=configs/expr_gan_synthetic.py --workdir=$(RUNS)/expr_gan
	$(BIN)/python -m launch.train_vae --config=configs/synthetic_vae.py --workdir=$(RUNS)/vae
	$(BIN)/python -m launch.train --config=configs/synthetic_stage1.py --workdir=$(RUNS)/stage1 \
	  --config.init.vae_checkpoint=$(RUNS)/vae
	$(BIN)/python -m launch.train --config=configs/synthetic_stage2.py --workdir=$(RUNS)/stage2 \
	  --config.init.stage1_checkpoint=$(RUNS)/stage1
	$(BIN)/python -m launch.train --config=configs/synthetic_stage2_2d.py --workdir=$(RUNS)/stage2_2d \
	  --config.init.stage2_checkpoint=$(RUNS)/stage2
	$(BIN)/python -m launch.export_bundle --stage2=$(RUNS)/stage2_2d --gan=$(RUNS)/expr_gan \
	  --out=$(RUNS)/bundle_2d
	$(BIN)/python -m launch.train --config=configs/synthetic_stage2_finetune.py --workdir=$(RUNS)/stage2_ft \
	  --config.init.bundle=$(RUNS)/bundle_2d
	$(BIN)/python -m launch.export_bundle --stage2=$(RUNS)/stage2_ft --gan=$(RUNS)/expr_gan \
	  --out=data/checkpoints/synthetic --cfg.guidance.emotion=2 --cfg.guidance.emotion_t_min=500

# pytest exit 5 (no tests collected) is a failure, not a pass.
test: setup-test
	$(BIN)/python -m pytest -q -m "not slow" --durations=15; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

test-slow: setup-test
	$(BIN)/python -m pytest -q -m slow --durations=15; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no slow tests"; exit 1; fi; exit $$rc

bench: setup-test
	$(BIN)/python -m benchmarks.unet_step

clean:
	rm -rf $(VENV) .pytest_cache
