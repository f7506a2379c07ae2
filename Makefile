# Developer shortcuts. `make test` and `make bench` set up .venv themselves (see scripts/).
PYTHON ?= python3

.PHONY: build debug test test-wheel bench check-packaging docs clean

build:  ## compile the Cython core in place (needs Cython and a C compiler)
	BEANSTALKC_FAST_REQUIRE_EXTENSION=1 $(PYTHON) setup.py build_ext --inplace

debug:  ## in-place build with annotated HTML and line tracing (for coverage)
	BEANSTALKC_FAST_REQUIRE_EXTENSION=1 BEANSTALKC_FAST_DEBUG=1 $(PYTHON) setup.py build_ext --inplace --force

test:   ## install into .venv and run the tests, both backends
	bash scripts/test.sh

test-wheel:  ## build a wheel, install it in a fresh virtualenv, run the tests from outside the checkout
	bash scripts/test_wheel.sh

bench:  ## install into .venv and run the comparison benchmark (benchmarks/compare.py, quick)
	bash scripts/demo.sh

docs:   ## build the documentation site into docs/_build/html, warnings as errors (PYTHON= one with the docs extra)
	bash scripts/docs.sh

check-packaging:  ## sdist, wheel contents, no-compiler install, workflow syntax, cibuildwheel plan
	bash scripts/check_packaging.sh

clean:
	rm -rf build dist *.egg-info .eggs src/*.c src/*.html docs/_build
	find beanstalkc_fast -name '*.so' -delete -o -name '*.pyd' -delete
	find . -path ./.venv -prune -o -name __pycache__ -prune -exec rm -rf {} +

typecheck:
	$(PYTHON) -m mypy
