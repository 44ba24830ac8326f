# Nightly text-classification pipeline. `make demo` and `make test` are all a new user needs;
# both install what they need on first use (a .venv, the Python package, the Go exporter).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMPS := .stamps
EXPORTER := go-exporter/bin/go-exporter

# Keep every cache inside the checkout: nothing outside it is written by the pipeline.
export GOCACHE      := $(CURDIR)/.cache/go-build
export GOMODCACHE   := $(CURDIR)/.cache/go-mod
export GOFLAGS      := -modcacherw
export GOTOOLCHAIN  := local
export MPLCONFIGDIR := $(CURDIR)/.cache/matplotlib
export PIPELINE_EXPORTER := $(CURDIR)/$(EXPORTER)

GO_SOURCES := $(wildcard go-exporter/*.go) go-exporter/go.mod $(wildcard go-exporter/go.sum)

.PHONY: help setup demo test lint bench bench-vocab bench-ingest bench-score bench-export bench-train bench-orchestration bench-mysql bench-report bench-scale testdata fuzz torture golden clean distclean nightly backfill serve

help:
	@echo "make demo      run the whole pipeline on a generated corpus (installs on first use)"
	@echo "make test      run the Python and Go test suites"
	@echo "make lint      ruff, gofmt, go vet"
	@echo "make bench     benchmarks (prints ratios measured side by side)"
	@echo "make bench-scale  score 2M rows with the local runner and a 2-worker Dask LocalCluster"
	@echo "make bench-mysql  load 1M predictions into a throwaway MariaDB beside the mariadb client's LOAD DATA"
	@echo "make fuzz      fuzz go-exporter for FUZZTIME (default 60s)"
	@echo "make torture   kill a backfill TORTURE_KILLS times (default 20), resume, compare [TORTURE_SEED=N]"
	@echo "make golden    the demo and a backfill over ../shared/data give the bytes in benchmarks/golden.json"
	@echo "make testdata  regenerate go-exporter's pipeline-written test files"
	@echo "make nightly DATE=YYYY-MM-DD | make backfill START=... END=... [RUNNER=dask] | make serve [CRON=...]"
	@echo "make clean     remove generated data and build outputs (keeps .venv)"

setup: $(STAMPS)/venv $(EXPORTER)

$(STAMPS)/venv: pyproject.toml
	@mkdir -p $(STAMPS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,dask]'
	@touch $@

$(EXPORTER): $(GO_SOURCES)
	cd go-exporter && go build -trimpath -o bin/go-exporter .

demo: setup
	$(PY) -m pipeline demo

test: setup
	$(PY) -m pytest -q
	cd go-exporter && go vet ./... && go test ./...

lint: setup
	$(PY) -m ruff check pipeline tests benchmarks
	$(PY) -m ruff format --check pipeline tests benchmarks
	@out=$$(gofmt -l go-exporter); if [ -n "$$out" ]; then echo "gofmt: $$out"; exit 1; fi
	cd go-exporter && go vet ./...

bench: bench-vocab bench-ingest bench-score bench-export bench-train bench-orchestration bench-report

bench-vocab: setup
	$(PY) benchmarks/bench_vocab.py

bench-ingest: setup
	$(PY) benchmarks/bench_ingest.py

bench-export: setup
	$(PY) benchmarks/bench_export.py --big

testdata: setup
	$(PY) go-exporter/testdata/gen_pipeline_testdata.py
	cd go-exporter && go test -run 'TestPipeline' .

bench-train: setup
	$(PY) benchmarks/bench_train.py

bench-score: setup
	$(PY) benchmarks/bench_score.py --big-rows 10000000

FUZZTIME ?= 60s
fuzz: setup
	cd go-exporter && go test -run='^$$' -fuzz=FuzzExport -fuzztime=$(FUZZTIME) -fuzzminimizetime=5s -parallel 1 .

# Crash test: SIGKILL a backfill at TORTURE_KILLS random moments across its stages, resume each time,
# then compare every output with a clean run (a few minutes on 2 cores). TORTURE_SEED repeats a run.
TORTURE_KILLS ?= 20
export TORTURE_KILLS TORTURE_SEED
golden: setup
	$(PY) benchmarks/golden.py check

torture: setup
	OMP_NUM_THREADS=1 $(PY) benchmarks/torture.py

DATE ?= $(shell date -u +%F)
CRON ?= 0 2 * * *
export DATE START END CRON RUNNER

# A date must be a real calendar date YYYY-MM-DD, checked before anything runs: anything else is a
# usage error (exit 2), never a path. Values reach the shell through the environment, never pasted in.
define check_dates
	@for v in $(1); do d="$${!v}"; \
	  if ! [[ "$$d" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}$$ ]] || [[ "$$(date -u -d "$$d" +%F 2>/dev/null)" != "$$d" ]]; then \
	    echo "make: $$v must be a date YYYY-MM-DD, got '$$d'" >&2; exit 2; fi; done
endef

nightly:
	$(call check_dates,DATE)
	@$(MAKE) --no-print-directory setup
	$(PY) -m pipeline run --date "$$DATE"

backfill:
	$(call check_dates,START END)
	@$(MAKE) --no-print-directory setup
	$(PY) -m pipeline backfill --start "$$START" --end "$$END" $(if $(RUNNER),--runner "$$RUNNER")

serve:
	@$(MAKE) --no-print-directory setup
	$(PY) -m pipeline serve --cron "$$CRON"

bench-orchestration: setup
	$(PY) benchmarks/bench_orchestration.py

# One 2M-row partition scored by the local runner and by a 2-worker Dask LocalCluster (a few minutes).
bench-scale: setup
	$(PY) benchmarks/bench_scale.py --rows 2000000

# Needs Debian's mariadb-server and mariadb-client (not part of `make bench`, which needs neither).
bench-mysql: setup
	$(PY) benchmarks/bench_mysql.py

bench-report: setup
	$(PY) benchmarks/bench_report.py

clean:
	rm -rf go-exporter/bin .pytest_cache .ruff_cache data/.prefect
	find data -mindepth 2 -maxdepth 2 ! -name .gitkeep -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(STAMPS) .cache
