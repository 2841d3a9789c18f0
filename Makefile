# The two set-up commands of the README live here: `make demo` and `make test`.
# Each installs everything it needs from the lock file (uv.lock) into .venv first.
UV_VERSION := 0.13.9
PYTHON ?= python3
VENV := .venv
UV := .tools/bin/uv

.PHONY: demo test install lint bench

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.installed: pyproject.toml uv.lock $(UV)
	$(UV) sync --frozen --quiet
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/loyalty-cdp serve --data-dir ./data --demo

test: install
	$(VENV)/bin/python -m pytest -q

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
