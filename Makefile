# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# torch/torchvision are pinned here, and only here, to the releases on this project's machines' disk
# (plain pip finds them there); pyproject.toml accepts any torch >= 2.4.
TORCH_PIN = torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test docs clean

$(BIN)/dipkit: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PIN)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(BIN)/dipkit

install: $(BIN)/dipkit

demo: install
	$(BIN)/dipkit demo

test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# the documentation site in site/ (mkdocs.yml, docs/); --strict: a warning fails the build
$(BIN)/mkdocs: $(BIN)/dipkit pyproject.toml
	$(BIN)/python -m pip install -q -e '.[test,docs]'
	touch $(BIN)/mkdocs

docs: install $(BIN)/mkdocs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d site

clean:
	rm -rf $(VENV) build dist site src/*.egg-info .pytest_cache
