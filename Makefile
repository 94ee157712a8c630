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

quickstart: $(STAMP)
	$(BIN)/videogen make-synthetic --out $(DATA) --num-samples 96 --seed 0
	$(BIN)/videogen stream --config configs/data/quickstart.yaml --data.train_shards=$(DATA)/train

test: $(STAMP)
	$(BIN)/python -m pytest tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -m "not slow and not slurm"

clean:
	rm -rf $(VENV) data runs lightning_logs wandb
