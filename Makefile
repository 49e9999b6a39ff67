PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: install test test-all lint bench

# torch==2.13.0 first: on our CPU machines that exact CPU wheel lies on disk; a bare range
# would make pip fetch a multi-GB CUDA build. Elsewhere it is the regular PyPI wheel.
# espeak-ng speaks the test corpora's sentences (Debian package; needs root). Without it the
# corpus fixtures fall back to tones and everything else still runs.
# chromium-headless-shell (Debian; ~96 MB download, ~285 MB installed, ~17 s) runs the browser page
# test with a fake microphone; Playwright's own browser download is not reachable from CI. Without it
# tests/test_page_browser.py skips.
install:
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[test,train]"
	@command -v espeak-ng >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		(apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null); } || \
		echo "espeak-ng not installed: corpus fixtures use tones instead of speech"
	@command -v chromium-headless-shell >/dev/null || command -v chromium >/dev/null || \
		{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium-headless-shell \
		>/dev/null); } || echo "chromium-headless-shell not installed: the browser page test skips"

test:
	$(PYTHON) -m pytest -q -m "not gpu and not slow"

test-all:
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check speechkit tests eval

bench:
	$(PYTHON) eval/bench/frontend.py
