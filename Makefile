# featurelake: `make demo` runs the daily pipeline end to end, `make test` runs every test.
# Both create the environment first. Settings live in airflow.env.

SHELL := /bin/bash
.DEFAULT_GOAL := help

# make splits paths at spaces: every target would break, and `make clean` would remove the wrong
# directories (`/home/me/My` for `/home/me/My Projects/featurelake/...`).
ifneq ($(words $(CURDIR)),1)
$(error featurelake's directory has a space in its path ($(CURDIR)), which make cannot handle: clone it into a path without spaces)
endif

FEATURELAKE_ROOT := $(CURDIR)
include airflow.env
# The project's own Airflow home, not one exported for another Airflow (as Airflow's quick start
# suggests): that one's airflow.cfg, logs and generated password would mix with this project's.
# `make <target> AIRFLOW_HOME=<dir>` still sets another.
ifeq ($(origin AIRFLOW_HOME),environment)
ifneq ($(AIRFLOW_HOME),$(FEATURELAKE_ROOT)/.airflow)
$(warning ignoring AIRFLOW_HOME=$(AIRFLOW_HOME) from the environment: featurelake's Airflow home is $(FEATURELAKE_ROOT)/.airflow; pass AIRFLOW_HOME=<dir> on make's command line to use another)
override AIRFLOW_HOME := $(FEATURELAKE_ROOT)/.airflow
endif
endif
ifneq ($(words $(AIRFLOW_HOME)),1)
$(error AIRFLOW_HOME has a space in its path ($(AIRFLOW_HOME)), which make cannot handle: give one without spaces)
endif
export
AIRFLOW_ENV_NAMES := $(shell sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\) ?=.*/\1/p' $(CURDIR)/airflow.env)
# Airflow reads a Variable set empty in the environment as "", before its database: with
# `AIRFLOW_VAR_FEATURELAKE_LAKE= make airflow` every task saw an empty lake root, and the Variable
# made in the UI (Admin -> Variables) was never read. Such a setting is not exported, so the
# database's Variable is the one read. (An empty AIRFLOW_CONN_* already falls through to the database.)
EMPTY_AIRFLOW_VARS := $(foreach name,$(filter AIRFLOW_VAR_%,$(AIRFLOW_ENV_NAMES)),$(if $(strip $(value $(name))),,$(name)))
ifneq ($(EMPTY_AIRFLOW_VARS),)
unexport $(EMPTY_AIRFLOW_VARS)
endif

VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
# uv comes from PATH, or is installed once with pip into .uv-bootstrap (UV_INSTALLED, below).
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := $(CURDIR)/.uv-bootstrap/bin/uv
UV_INSTALLED := $(CURDIR)/.uv-bootstrap/.stamp-uv
endif
# The venv's bin first: spark-submit, airflow and featurelake are found there.
export PATH := $(VENV)/bin:$(PATH)
export DOCKER_CONFIG ?= $(CURDIR)/.airflow/docker

DEMO_START ?= 2026-07-01
DEMO_DATE ?= 2026-10-28
# The data ends on the run date, whatever DEMO_DATE says: a date past it failed the partition check
# and waited out the task's retries first.
DEMO_END ?= $(DEMO_DATE)
DEMO_USERS ?= 5000
PYTEST_ARGS ?=
# pytest-xdist workers for `make test`, each running whole modules; TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2

.PHONY: help demo test lint airflow clean lock bench env backfill exports

help:  ## List the targets
	@grep -hE '^[a-z]+:.*## ' Makefile | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

# The stamp, not uv itself, is the target: pip writes bin/uv in place, so an install stopped
# half-way (Ctrl-C, a killed job) left a partial, non-executable uv that make took as done, and
# every later `make env` failed ("Permission denied"). --clear starts such a venv afresh.
$(CURDIR)/.uv-bootstrap/.stamp-uv:
	python3 -m venv --clear $(CURDIR)/.uv-bootstrap
	$(CURDIR)/.uv-bootstrap/bin/pip install --quiet uv
	touch $@

# The venv is rebuilt only when a lock or pyproject.toml changes. uv venv writes pyvenv.cfg after
# bin/python, which links to the base Python: a venv whose creation was stopped between the two is
# created again, as `pip sync --python $(PY)` would otherwise sync (and strip) the base Python itself.
$(VENV)/.stamp-installed: requirements.txt requirements-dev.txt pyproject.toml | $(UV_INSTALLED)
	test -f $(VENV)/pyvenv.cfg || { rm -rf $(VENV) && $(UV) venv --quiet --python 3.11 $(VENV); }
	$(UV) pip sync --quiet --python $(PY) requirements.txt requirements-dev.txt
	$(UV) pip install --quiet --python $(PY) --no-deps -e .
	touch $@

env: $(VENV)/.stamp-installed  ## Create .venv from the locks (skipped when they have not changed)

# One stamp per metadata database: pointing AIRFLOW__DATABASE__SQL_ALCHEMY_CONN at another database
# migrates that one too.
DB_STAMP := $(AIRFLOW_HOME)/.stamp-db-$(shell printf '%s' '$(subst ','\'',$(AIRFLOW__DATABASE__SQL_ALCHEMY_CONN))' | cksum | cut -d' ' -f1)

$(DB_STAMP): $(VENV)/.stamp-installed
	mkdir -p $(AIRFLOW_HOME)
	airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || (tail -30 $(AIRFLOW_HOME)/db-migrate.log; exit 1)
	touch $@

demo: $(DB_STAMP)  ## Generate ~120 days of data and run user_features_daily for one date
	featurelake generate --start $(DEMO_START) --end $(DEMO_END) --users $(DEMO_USERS) --seed 7 \
		--lake $(AIRFLOW_VAR_FEATURELAKE_LAKE)
	$(PY) -m featurelake_airflow.demo --dag-id user_features_daily --date $(DEMO_DATE)

# --durations: the slowest tests close the log, to keep the suite within CI's 30 minutes.
test: $(VENV)/.stamp-installed  ## Run every test: unit, DAG integrity, integration
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25 $(PYTEST_ARGS)

lint: $(VENV)/.stamp-installed  ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Ctrl-C reaches every process of the terminal's group, and LocalExecutor's workers ignore it and
# outlive a standalone that is still stopping. So standalone runs in its own session, and Ctrl-C is
# passed to it alone: it stops its components and exits (about 4 s when no task runs); so is a
# closed terminal's SIGHUP and make's SIGTERM. The launcher gives it back the default SIGINT, which
# the shell takes from a command it starts in the background. With a task running, standalone's
# scheduler waited on a worker that ignores SIGINT and SIGTERM for minutes: whatever of its session
# is left after STANDALONE_GRACE seconds gets SIGTERM, then SIGKILL 10 s later.
STANDALONE_LAUNCHER = $(PY) -c 'import os, signal; signal.signal(signal.SIGINT, signal.SIG_DFL); os.setsid(); os.execvp("airflow", ["airflow", "standalone"])'
STANDALONE_GRACE ?= 20
SESSION_GONE = for _ in $$(seq $(1)); do pgrep -s $$pid > /dev/null || break; sleep 1; done; ! pgrep -s $$pid > /dev/null
airflow: $(DB_STAMP)  ## Serve the Airflow UI on :8080 (user admin, see README); Ctrl-C stops it
	@$(STANDALONE_LAUNCHER) & pid=$$!; \
	trap 'echo "stopping airflow standalone (pid $$pid)..."; kill -INT $$pid 2>/dev/null; \
		$(call SESSION_GONE,$(STANDALONE_GRACE)) || { \
			echo "still running after $(STANDALONE_GRACE) s (a task?): terminating its processes"; \
			pkill -TERM -s $$pid; $(call SESSION_GONE,10) || pkill -KILL -s $$pid; }; \
		wait $$pid 2> /dev/null; exit 0' INT TERM HUP; \
	wait $$pid

FROM ?=
TO ?=
# The dates come from Python, not date(1): GNU and BSD date take different options.
BACKFILL_DATES = $(PY) -c 'import sys; from datetime import date, timedelta as t; sys.excepthook = lambda *e: sys.exit(f"make backfill: {e[1]}: FROM and TO must be real dates, YYYY-MM-DD"); a, b = map(date.fromisoformat, sys.argv[1:]); print(*(a + t(i) for i in range((b - a).days + 1)))'
# FROM and TO are checked when make reads this file, before the venv is built and the database
# migrated; the dates themselves (2026-02-30) are checked by Python, from the venv.
ifneq ($(filter backfill,$(MAKECMDGOALS)),)
ifneq ($(shell [[ "$(FROM)" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}$$ && "$(TO)" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}$$ && ! "$(FROM)" > "$(TO)" ]] && echo ok),ok)
$(error usage: make backfill FROM=YYYY-MM-DD TO=YYYY-MM-DD, with FROM on or before TO (given: FROM=$(FROM) TO=$(TO)))
endif
endif
backfill: $(DB_STAMP)  ## Without a scheduler: run user_features_daily for each date FROM..TO
	@dates=$$($(BACKFILL_DATES) "$(FROM)" "$(TO)") || exit 2; \
	lake="$${AIRFLOW_VAR_FEATURELAKE_LAKE#file://}"; missing=(); \
	if [[ -n "$$lake" && "$$lake" != *://* ]]; then for d in $$dates; do \
		compgen -G "$$lake/raw/transactions/date=$$d/[!._]*.parquet" > /dev/null || missing+=("$$d"); \
	done; fi; \
	if (( $${#missing[@]} )); then \
		echo "make backfill: no raw transactions under $$lake/raw/transactions for: $${missing[*]}"; \
		echo "land them first (locally: featurelake generate --start $(FROM) --end $(TO) --users $(DEMO_USERS) --seed 7 --lake $$lake)"; \
		exit 2; \
	fi; \
	for d in $$dates; do \
		echo "== user_features_daily $$d"; \
		airflow dags test user_features_daily "$$d" > $(AIRFLOW_HOME)/backfill-$$d.log 2>&1 \
			|| { tail -40 $(AIRFLOW_HOME)/backfill-$$d.log; exit 1; }; \
		echo "   succeeded; log: $(AIRFLOW_HOME)/backfill-$$d.log"; \
	done

bench: $(VENV)/.stamp-installed  ## Run the benchmarks in bench/
	$(PY) bench/generate.py
	$(PY) bench/dag_parse.py
	$(PY) bench/online_store.py
	$(PY) bench/merchant_stats.py
	$(PY) bench/feature_job.py

# Each lock is compiled into a copy of itself (uv keeps the pins it finds in its output file) and
# put in place only when its text changed: a lock rewritten with the same text is newer than the
# venv, and make would rebuild the venv and migrate the database again for nothing.
LOCK_ONE = lock_one() { cp "$$2" "$$2.new" && $(UV) pip compile --quiet --python-version 3.11 \
	--custom-compile-command "uv pip compile --python-version 3.11 $$1 -o $$2" "$$1" -o "$$2.new" \
	|| { rm -f "$$2.new"; return 1; }; cmp -s "$$2.new" "$$2" && rm "$$2.new" || mv "$$2.new" "$$2"; }
lock: | $(UV_INSTALLED)  ## Regenerate requirements*.txt from requirements*.in (a lock whose text is the same is left untouched)
	@$(LOCK_ONE); lock_one requirements.in requirements.txt && lock_one requirements-dev.in requirements-dev.txt

# The project's own Airflow home only: an AIRFLOW_HOME set elsewhere in the environment is never removed.
clean:  ## Remove .venv, .uv-bootstrap, the project's .airflow, ./data and .pytest_cache (not a lake set elsewhere)
	rm -rf $(VENV) $(CURDIR)/.uv-bootstrap $(CURDIR)/.airflow $(CURDIR)/data .pytest_cache

exports:  ## Print airflow.env and the venv's PATH as shell exports: eval "$(make -s exports)"
	@# From the recipe's environment, not make's expansion, which dropped `$t` from a password `s3cr$t`
	@# and broke on a quote: printf %q quotes what the shell holds.
	@$(foreach name,$(filter-out $(EMPTY_AIRFLOW_VARS),$(AIRFLOW_ENV_NAMES)),printf 'export %s=%q\n' '$(name)' "$$$(name)";)
	@$(foreach name,$(EMPTY_AIRFLOW_VARS),printf 'unset %s\n' '$(name)';)
	@printf 'export PATH=%q:"$$PATH"\n' '$(VENV)/bin'
