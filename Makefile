# The README's two commands: `make serve` and `make test`. Everything they need installs from here.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
CONFIG ?= examples/telecom.toml
PROTO := proto/brein/v1/brein.proto

.PHONY: serve test proto proto-check bench lint

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

# Generated code is committed; `make proto` rewrites it from proto/ (imports made package-relative).
define generate
	rm -rf $(1) && mkdir -p $(1)/brein/v1
	$(PY) -m grpc_tools.protoc -Iproto --python_out=$(1) --pyi_out=$(1) --grpc_python_out=$(1) $(PROTO)
	sed -i 's/^from brein\.v1 import/from serving.pb.brein.v1 import/' $(1)/brein/v1/*.py
	touch $(1)/__init__.py $(1)/brein/__init__.py $(1)/brein/v1/__init__.py
endef

proto: $(STAMP)
	$(call generate,serving/pb)

proto-check: $(STAMP)
	$(eval TMP := $(shell mktemp -d))
	$(call generate,$(TMP)/pb)
	diff -r -x __pycache__ $(TMP)/pb serving/pb || (echo "serving/pb is stale: run 'make proto' and commit" && exit 1)
	rm -rf $(TMP)

serve: $(STAMP)
	test -f serving/pb/brein/v1/brein_pb2.py || $(MAKE) proto
	$(VENV)/bin/brein serve --config $(CONFIG)

# PostgreSQL's tests must run, not skip: a PostgreSQL server at BREIN_TEST_POSTGRES_URL (default
# postgresql://postgres@127.0.0.1:5432/test) is part of what `make test` needs. A process per core,
# each given whole files (--dist loadfile): a module's costly fixture (a simulated run) is made once.
# Files are handed out in the suite's order, costly ones first (tests/conftest.py), not xdist's
# default of the most tests first, which left a two-test file of minutes to the end.
test: $(STAMP) proto-check
	BREIN_REQUIRE_POSTGRES=1 $(PY) -m pytest -q -n auto --dist loadfile --no-loadscope-reorder

bench: $(STAMP)
	$(PY) -m bench

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy store bandit reward policies brain serving
