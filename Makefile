# cletir: `make demo` runs the product, `make test` runs the whole test suite.
# Each bootstraps what it needs on a fresh clone (Python 3.11, git and make are all it assumes).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
REDIS_HOST := 127.0.0.1
REDIS_PORT := 6379

# Development defaults; a real site sets these in its environment (see README).
export DJANGO_DEBUG ?= 1
# Weights come from CLETIR_MODEL_DIR; set HF_HUB_OFFLINE=0 to let the libraries fetch missing
# ones from the hub (on a machine with internet).
export HF_HUB_OFFLINE ?= 1
export PYTHONUNBUFFERED := 1

.PHONY: demo test setup venv redis chromium clean-state

# The demo runner does its own set-up (checks, migrations, admin, models, sample library) inside
# the run, so that Ctrl-C at any point stops what it started, the embedded Postgres included.
demo: venv
	$(PY) -m cletir_site.demo

test: setup redis chromium
	$(PY) -m pytest $(PYTEST_ARGS)

setup: $(STAMP)
	@$(PY) manage.py check_services
	$(PY) manage.py migrate --noinput

venv: $(STAMP)

$(PY):
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "cletir needs Python 3.11, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)

# Reinstalls only when requirements.txt changed since the last install.
$(STAMP): requirements.txt | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $@

# The integration tests use a real Redis broker; start the machine's one if it is down.
redis:
	@if $(PY) -c 'import socket; socket.create_connection(("$(REDIS_HOST)", $(REDIS_PORT)), 1)' 2>/dev/null; then \
		echo "redis: up on $(REDIS_HOST):$(REDIS_PORT)"; \
	elif command -v redis-server >/dev/null; then \
		redis-server --daemonize yes --bind $(REDIS_HOST) --port $(REDIS_PORT) --save "" --appendonly no && sleep 1; \
	else \
		echo "redis: not installed; the tests that need a Redis broker will be skipped"; \
	fi

# The browser tests drive Debian's Chromium (Playwright's own browser download does not work
# here); install it once, as root, when it is missing.
chromium:
	@if [ -x /usr/bin/chromium ]; then \
		echo "chromium: /usr/bin/chromium"; \
	else \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	fi

# Removes the checkout's runtime state (database, media, broker queues, built models).
clean-state:
	-$(PY) manage.py embedded_postgres stop
	rm -rf var
