# The two commands a new user types: `make demo` and `make test`.
# Every target depends on the virtual environment, which `make .venv` creates alone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.dmol-installed
export PYTHONUNBUFFERED := 1

.PHONY: .venv demo test lint bench data clean help
help:
	@echo "make demo   train a small WaveNet on built-in real speech and write ./demo"
	@echo "make test   run the test suite, then a smoke test of the installed wheel"
	@echo "make .venv  create the environment only"

.venv: $(STAMP)

# torch is pinned: 2.13.0 resolves to the local CPU wheel; a range would pull a CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[audio,eval,dev]'
	touch $(STAMP)

# The built-in corpus prefers real recordings from a Debian package; without apt (or root)
# `dmol data builtin` falls back to synthesized speech and says so. The French and Italian
# prompts are voices the shipped model never heard (the demo vocodes them too).
SOUNDS := asterisk-core-sounds-en-g722 asterisk-core-sounds-fr-g722 asterisk-core-sounds-it-g722
data: $(STAMP)
	@if dpkg -s $(SOUNDS) >/dev/null 2>&1 && command -v espeak-ng >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  echo "installing $(SOUNDS) espeak-ng (Debian packages)"; \
	  { apt-get update -qq && apt-get install -y -qq $(SOUNDS) espeak-ng >/dev/null; } \
	  || echo "note: apt could not install them; the built-in corpus will fall back or explain"; \
	else echo "note: without root and apt the built-in corpus falls back to espeak-ng, if present"; fi

demo: data
	$(BIN)/dmol demo --out demo

# ... then the package as a user gets it: wheel -> fresh venv -> used from outside the checkout
test: data
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest -q
	bash .ci/wheel_smoke.sh $(BIN)/python

bench: $(STAMP)
	$(BIN)/dmol bench loss

clean:
	rm -rf $(VENV) demo .pytest_cache .hypothesis
