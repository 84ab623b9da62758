# soundstage — the two commands of the README:
#   make run    set up .venv (if missing), run the whole pipeline on the configured data
#               (the synthesized demo by default), print the metrics and how to open MLflow
#   make test   lint, then the whole test suite (what CI runs)
#   make test-fast   the unit tests alone (under a minute), for the edit-test loop
#   make lint   ruff, snakemake --lint and snakefmt --check
#   make system-deps   the Debian packages tests use (Chromium, a one-node SLURM, munge), as root
#   make pull   in a fresh clone: dvc pull, then Snakemake told what DVC knows (nothing left to do)
#   make screenshots   after make run: docs/*.png of the report and the MLflow UI (headless Chromium)
#   make report after a run: the Snakemake report (reports/report.html: dataset, example clips, models)
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
# One BLAS/numba thread per worker: Snakemake runs shards in parallel.
export OMP_NUM_THREADS := 1
export OPENBLAS_NUM_THREADS := 1
export MKL_NUM_THREADS := 1
export NUMBA_NUM_THREADS := 1
export KERAS_BACKEND := jax

.PHONY: run test test-fast lint install system-deps dvc-repro pull compare report screenshots clean bench-refs

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

run: install
	snakemake --workflow-profile workflow/profiles/default --cores all
	@echo
	@soundstage evaluate --summary
	@echo
	@echo "Dataset report: reports/dataset/report.md   Confusion matrices: reports/evaluate/<model>/"
	@echo "All figures:    make report  (then open reports/report.html)"
	@echo "Compare runs:   $(VENV)/bin/soundstage compare"
	@echo "MLflow UI:      $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db  (open http://127.0.0.1:5000, then Model training at the top left)"

# Debian packages the tests drive for real: Chromium (the report and the MLflow UI render headless) and
# a one-node SLURM with munge (the cluster profile). Installed once, only those missing; apt needs root.
SYSTEM_PACKAGES := chromium slurm-wlm munge
system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	    echo "Installing Debian packages:" $$missing; \
	    $$sudo apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

test: install system-deps lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

test-fast: install
	$(BIN)/python -m pytest -q -n 2 -m "not slow and not integration"

lint: install
	$(BIN)/ruff check src tests benchmarks docs
	$(BIN)/snakefmt --check Snakefile workflow
	$(BIN)/snakemake --lint

dvc-repro: install
	dvc repro

# A fresh clone (after `make install`): the committed run's data and results from the DVC remote; once
# `dvc status` says they are what the committed code, params and data give, Snakemake records them
# (`--touch`: stamped in pipeline order, nothing recomputed, no byte changed), since `dvc pull` writes
# files in no order and a clone has no Snakemake metadata.
pull:
	dvc pull
	@dvc status --quiet || { dvc status; echo "make pull: the pulled outputs differ from dvc.lock; not stamping them" >&2; exit 1; }
	snakemake --workflow-profile workflow/profiles/default --cores all --touch --forceall --quiet

compare: install
	soundstage compare

# Reads the outputs of the last run (it runs nothing): `make run` first.
report: install
	snakemake --report reports/report.html
	@echo "Report: reports/report.html   DVC plots: $(VENV)/bin/dvc plots show -o reports/dvc_plots"

# After `make run`: the report and the MLflow UI rendered in headless Chromium, saved to docs/*.png.
screenshots: install system-deps report
	$(BIN)/python docs/screenshots.py --project . --out docs

# The essentia and openSMILE references of benchmarks/bench_e2e.py (the `bench` extra) in .venv.
bench-refs: install
	$(BIN)/python -m pip install --quiet -e '.[bench]'

clean:
	rm -rf data/ingest data/process data/split data/features data/stats models reports logs .snakemake
