# stylequeue: short recipes. CI (.ci/run) runs the README's test command: make lint && make test && make test-containers.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

# The suite in two processes (pytest-xdist), each test file in one of them (its module's servers
# started once): 2 cores run the real servers' waits and the engine's work side by side.
# PARALLEL= runs it in one process.
PARALLEL ?= -n 2 --dist loadfile

.PHONY: test test-fast test-other-precision test-containers lint bench demo dev clean

# Create the virtualenv, install the project with every extra (and, on Debian as root, the
# browser the playground's test drives: chromium, chromium-driver), run the whole suite, then the
# engine tests once more with precision `auto` resolved the other way (test-other-precision).
test: $(STAMP)
	sh tests/support/browser-setup.sh
	$(BIN)/python -m pytest $(PARALLEL) --durations=25
	$(MAKE) test-other-precision

# Everything but the tests marked slow (real servers, subprocess CLIs).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not containers"

# The engine, tiling and options tests once more with precision `auto` resolved the other way from
# this machine's (STYLEQUEUE_AUTO_PRECISION): float32 where the CPU has native bfloat16, bfloat16
# where it has not, so every machine runs both (`make test` runs it after the suite). Tests that
# pin their precision (marked pinned_precision) ran already as they are: skipped here.
test-other-precision: $(STAMP)
	STYLEQUEUE_AUTO_PRECISION=$$($(BIN)/python -c "from worker.nst.vgg import native_bfloat16; \
	  print('float32' if native_bfloat16() else 'bfloat16')") \
	  $(BIN)/python -m pytest $(PARALLEL) -m "not pinned_precision and not containers" \
	  tests/unit/test_engine.py tests/unit/test_tiling.py tests/unit/test_options.py

# The images and the compose stack built and run for real with podman (root, Debian): installs
# podman and podman-compose, builds every image, runs the tests/containers suite, removes it all.
test-containers: $(STAMP)
	VENV=$(VENV) sh tests/containers/setup.sh
	$(BIN)/python -m pytest tests/containers -m containers -v -s --timeout 3600

# Fast checks, run first by CI: style, formatting, types and the layering rules (pyproject.toml's
# [tool.importlinter]); .pre-commit-config.yaml runs the same.
lint: $(STAMP)
	$(BIN)/ruff check producer worker tests benchmarks deploy
	$(BIN)/ruff format --check producer worker tests benchmarks deploy
	$(BIN)/mypy
	$(BIN)/lint-imports
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir $(VENV)/site

bench: $(STAMP)
	$(BIN)/python benchmarks/engine.py

# Stylize the generated sample pair. WEIGHTS=imagenet downloads; WEIGHTS=path/to/file.weights.h5 offline.
WEIGHTS ?= imagenet
demo: $(STAMP)
	$(BIN)/stylequeue samples out/
	$(BIN)/stylequeue stylize out/content.png out/style.png -o out/result.png --size 256 --iterations 50 --weights $(WEIGHTS)

# The Compose Specification's JSON schema (for tests/unit/test_deploy.py): the docker-compose 1.29.2
# wheel on PyPI ships it (compose/config/compose_spec.json); only the schema is extracted.
SCHEMA_WHEEL = docker-compose==1.29.2

# The whole system locally, no Docker: Redis, SeaweedFS, a worker; Ctrl-C stops it.
dev: $(STAMP)
	$(BIN)/stylequeue dev --weights $(WEIGHTS) --serve

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	mkdir -p $(VENV)/share
	$(BIN)/pip download --quiet --no-deps --dest $(VENV)/share $(SCHEMA_WHEEL)
	$(BIN)/python -c "import glob, zipfile; w = glob.glob('$(VENV)/share/docker_compose-*.whl')[0]; \
	  open('$(VENV)/share/compose-spec.json', 'wb').write(zipfile.ZipFile(w).read('compose/config/compose_spec.json'))"
	rm -f $(VENV)/share/docker_compose-*.whl
	touch $(STAMP)

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache *.egg-info
