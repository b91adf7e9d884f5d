# The README's two commands are `make repro` and `make test`; both set up first.
SHELL := /bin/bash
export PATH := $(CURDIR)/.venv/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
export OPEN3D_DISABLE_WEB_VISUALIZER := true
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONHASHSEED := 0

.PHONY: setup repro test lint lab bench gpu-check rehearsal
setup:
	@bash scripts/setup.sh

repro: setup  ## dvc repro on the profile named in params.yaml (default: tiny)
	python -m pointvl.profile --check && dvc repro

test: setup  ## the whole suite on the smoke profile (what CI runs)
	POINTVL_PROFILE=smoke python -m pytest -n 2 --durations=15

lint: setup
	ruff check . && ruff format --check .

LAB_IP ?= 127.0.0.1
LAB_PORT ?= 8888
lab: setup  ## JupyterLab on the project's kernel ("PointVL-3D"), headless; prints its URL
	@echo "[lab] JupyterLab on http://$(LAB_IP):$(LAB_PORT)/lab (the URL with its token follows)."
	@echo "[lab] From another machine: ssh -L $(LAB_PORT):localhost:$(LAB_PORT) <this host>, then open it."
	jupyter lab --notebook-dir=notebooks --no-browser --ip=$(LAB_IP) --port=$(LAB_PORT) \
		--ServerApp.port_retries=0 $(if $(filter 0,$(shell id -u)),--allow-root)

bench: setup
	for b in benchmarks/bench_*.py; do python $$b || exit 1; done
	python benchmarks/bench_train.py --malloc default --out results/bench/train_malloc_default.json
	python benchmarks/profile_decode.py  # needs the tiny SFT checkpoint (dvc repro sft)

gpu-check: setup  ## the paper-size policy on one CUDA GPU: bf16 forward/backward, generation, 2 GRCA steps
	python scripts/gpu_check.py

rehearsal: setup  ## the paper profile's code path on the CPU (paper_sim: 2 processes, ZeRO-3) -> results/paper_sim/
	python scripts/rehearsal.py
