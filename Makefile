# Two commands: `make demo` and `make test`. Each creates or reuses .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hrtem3d demo --out demo_output

# Qt runs offscreen without a display; `xvfb-run -a make test` also docks the napari widget in a full viewer.
# Where Qt's system libraries are missing, its pytest plugins are left out and the Qt tests skip.
test: $(STAMP)
	@if $(BIN)/python -c "import PyQt5.QtWidgets" 2>/dev/null; then noqt=""; else \
	  echo "Qt cannot load (apt-get install libgl1 libegl1 libxkbcommon0 libdbus-1-3 libfontconfig1): Qt tests skip"; \
	  noqt="-p no:pytest-qt -p no:napari"; fi; \
	$(BIN)/python -m pytest -q tests $$noqt

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples

clean:
	rm -rf $(VENV) demo_output
