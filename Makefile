# The two README commands: `make quickstart` (main job) and `make test`. Each installs what it needs
# into .venv first (once; again when pyproject.toml changes).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= data/synthetic

.PHONY: install quickstart test test-fast clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The main job: the synthetic set, one streamed epoch of it, stage 1 (the VAE, ~14 min on 2 cores)
# and its evaluation on held-out clips (a second synthetic set made with another seed).
quickstart: $(STAMP)
	$(BIN)/videogen make-synthetic --out $(DATA) --num-samples 96 --seed 0
	$(BIN)/videogen stream --config configs/data/quickstart.yaml --data.train_shards=$(DATA)/train
	$(BIN)/videogen make-synthetic --out $(DATA)-heldout --num-samples 60 --seed 1 --val-fraction 0
	$(BIN)/videogen fit --config configs/vae/quickstart.yaml --data.init_args.train_shards=$(DATA)/train \
		--data.init_args.val_shards=$(DATA)/val
	$(BIN)/videogen eval-vae --vae runs/vae/quickstart/export --data $(DATA)-heldout/train
	@echo "stage 1 export: runs/vae/quickstart/export (TensorBoard: $(BIN)/tensorboard --logdir runs)"

test: $(STAMP)
	$(BIN)/python -m pytest tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -m "not slow and not slurm"

clean:
	rm -rf $(VENV) data runs lightning_logs wandb
