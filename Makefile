# Every target creates .venv when missing and installs the project into it.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: app test lab train bench tiny-model clean browser

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build of torch first, so nothing below pulls a CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

# The browser test drives Debian's Chromium (no browser download); install it when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: the browser test will skip"

app: $(STAMP)
	$(BIN)/python app.py

test: $(STAMP) browser
	HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False MPLBACKEND=Agg $(BIN)/python -m pytest -q

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

bench: $(STAMP)
	$(BIN)/python bench/rewards.py
	$(BIN)/python bench/coco_eval.py
	$(BIN)/python bench/step_vs_trl.py
	$(BIN)/python bench/app_latency.py

tiny-model: $(STAMP)
	$(BIN)/python -m workbench.pretrain

train: $(STAMP)
	$(BIN)/python -m workbench.train

clean:
	rm -rf $(VENV)
