# Two commands on a fresh machine: `make demo` and `make test`. Each sets up .venv itself.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is not pinned in pyproject.toml. Where pip can find this CPU wheel without an index (a local
# wheel directory in pip's find-links, as on our CI machines) it is installed first, so the editable
# install below does not pull a multi-GB CUDA build. Elsewhere pip picks the build for the platform;
# override with e.g. `make TORCH_SPEC="torch==2.5.1"`.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: venv demo test test-slow bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel 2>/dev/null || true
	$(PY) -m pip install -q --no-index --no-deps "$(TORCH_SPEC)" 2>/dev/null \
		|| echo "make: no local wheel for $(TORCH_SPEC); pip will choose torch for this platform"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

demo: venv
	$(VENV)/bin/oncodiff demo --out demo-output

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: venv
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

bench: venv
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) demo-output .pytest_cache
