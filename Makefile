# Two commands: `make run` and `make test`. Both create .venv and install on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kprune-installed
# The CPU build of torch 2.13.0 lies in /opt/wheels on these machines; elsewhere pip finds torch on PyPI.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels)
export PATH := $(CURDIR)/$(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export DO_NOT_TRACK := 1

.PHONY: setup run test lint format clean-venv repro bench bench-quick bench-memory

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(FIND_LINKS) torch==2.13.0
	$(BIN)/python -m pip install -q $(FIND_LINKS) -c constraints.txt -e ".[all,dev]"
	@# the pipeline's stages/, flows/ and bench/ are not installed (the wheel holds kprune only):
	@# the project's environment finds them in this checkout, from any working folder
	$(BIN)/python -c "import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()['purelib'], 'kprune-pipeline.pth').write_text('$(CURDIR)\n')"
	@touch $(STAMP)

# fetch + prepare the data (DVC: reproducible bit for bit, so the committed dvc.lock stays as
# it is), then fine-tune the rt teacher, prune, evaluate, export and track it at the reductions
# of params.yaml (Prefect flow: cached on content, logged to MLflow, outputs in data/flows).
run: setup
	$(BIN)/dvc repro prepare
	$(BIN)/python -m flows.compress

# `make repro`: the MiniLM teachers and the compress chain of params.yaml; `make repro
# STAGES=finetune@mpnet-base-rt` any other stage (the MPNet and SNLI ones fetch on demand and
# train for hours on a CPU): dvc with the project's python
TEACHERS = $(foreach t,rt vader-movie trec6 sms-spam,finetune@minilm-l6-$(t))
DEFAULT_STAGES = $(TEACHERS) evaluate export sparsify sparsify_pruned
STAGES ?= $(DEFAULT_STAGES)
repro: setup
	$(BIN)/dvc repro $(STAGES)

bench: setup
	$(BIN)/python -m bench

bench-quick: setup
	$(BIN)/python -m bench --quick

# one pytest worker per core (`-n auto`); each test file stays on one worker, in order (its
# module fixtures, e.g. one project shared by the flow tests, are built once)
test: setup lint
	$(BIN)/pytest -n auto --dist loadfile

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean-venv:
	rm -rf $(VENV)

bench-memory: setup
	$(BIN)/python -m bench.memory
