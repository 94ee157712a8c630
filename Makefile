# The README commands: `make quickstart` (main job), `make smoke` (its plumbing in minutes) and
# `make test`. Each installs what it needs into .venv first (once; again when pyproject.toml or
# constraints.txt changes).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install quickstart smoke test test-fast clean

install: $(STAMP)

# constraints.txt pins every package at the versions CI and the Docker image use
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The main job: the whole chain on the synthetic set (configs/pipeline/quickstart.yaml, ~32 min on 2
# cores with AVX512-BF16, ~80 on 2 AVX2-only cores): data -> VAE -> captioner -> recaptioned shards ->
# latent cache -> DiT -> sample mp4s -> the scorecard (its last step): every stage's held-out figures
# beside their targets, also in
# runs/pipeline/quickstart/scorecard.json. make exits non-zero when a figure falls short, after one
# line per miss saying what to do. Rerunning skips the steps already done.
quickstart: $(STAMP)
	$(BIN)/videogen pipeline --config configs/pipeline/quickstart.yaml
	@echo "samples: runs/pipeline/quickstart/samples (TensorBoard: $(BIN)/tensorboard --logdir runs)"

# The same chain at a tiny size (configs/pipeline/smoke.yaml, a few minutes): proves the plumbing, not the learning
smoke: $(STAMP)
	$(BIN)/videogen pipeline --config configs/pipeline/smoke.yaml

test: $(STAMP)
	$(BIN)/python -m pytest tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -m "not slow and not slurm"

clean:
	rm -rf $(VENV) data runs lightning_logs wandb
