# Two commands for a fresh machine: `make run` (the default workflow) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CORES ?= all
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install run test lint bench clean paper-rd

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,slurm]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)

# The reaction–diffusion experiment alone at the paper's scale (CPU, about 20 min on 2
# cores), in runs/paper-rd/ so that it leaves the default run's results/ alone.
PAPER_RD_ARGS := --directory runs/paper-rd --configfile config/paper.yaml config/paper-rd.yaml
paper-rd: $(STAMP)
	mkdir -p runs/paper-rd && ln -sfn ../../config runs/paper-rd/config
	$(BIN)/snakemake --cores $(CORES) $(PAPER_RD_ARGS)

# one pytest worker per core, each test file on one worker (module fixtures run once)
test: $(STAMP)
	$(BIN)/pytest -n auto --dist loadfile

lint: $(STAMP)
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow/rules

# Full benchmarks print the figures quoted in the README (minutes); bench-quick runs the
# same code at toy sizes in seconds, only to show that each still runs (as tests do).
.PHONY: bench-quick
bench: $(STAMP)
	for b in benchmarks/[!_]*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

bench-quick: $(STAMP)
	for b in benchmarks/[!_]*.py; do echo "== $$b --quick"; $(BIN)/python $$b --quick || exit 1; done

clean:
	rm -rf results .snakemake
