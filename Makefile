# Two commands for a fresh machine: `make run` (the default workflow) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CORES ?= all
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,slurm]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)

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
