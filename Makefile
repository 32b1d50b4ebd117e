# The two set-up commands from README.md. Both install what they need on a fresh machine.
VENV ?= .venv
export HF_HUB_OFFLINE = 1
export LITELLM_LOCAL_MODEL_COST_MAP = True
export TOKENIZERS_PARALLELISM = false

.PHONY: quickstart test setup lint

setup:
	VENV=$(VENV) bash tools/setup.sh

## Run the whole loop on the embedded defaults (agentkd run recipes/quickstart.yaml: collect → curate → train → eval); no ../shared needed.
# (its set-up installs only what the loop uses; a venv set up for `make test` already has it)
quickstart:
	VENV=$(VENV) EXTRAS=train,serve,sandbox APT_PACKAGES=bubblewrap bash tools/setup.sh
	VENV=$(VENV) bash tools/quickstart.sh

## Run the whole test suite (lint + pytest), starting the services the tests need.
test: setup
	VENV=$(VENV) bash tools/ci/test.sh

lint:
	$(VENV)/bin/ruff check agentkd tools tests
