#!/usr/bin/env bash
# Set up a virtual environment with everything corpus-search needs, from the package registries only.
# A CPU build of torch goes in first on machines without CUDA, so nothing pulls a multi-GB CUDA build.
#   TORCH_INSTALL_ARGS   what to pip-install for torch (default: torch==2.13.0; on a CPU machine elsewhere
#                        add PyTorch's CPU wheel index with --index-url to get the small CPU build)
#   VENV                 where the environment lives (default: .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
if ! python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: CUDA found: installing torch with CUDA"
    python -m pip install -q ${TORCH_INSTALL_ARGS:-torch}
  else
    echo "setup: no CUDA: installing a CPU torch first (${TORCH_INSTALL_ARGS:-torch==2.13.0})"
    # shellcheck disable=SC2086
    python -m pip install -q ${TORCH_INSTALL_ARGS:-torch==2.13.0}
  fi
fi
python -m pip install -q -e ".[test,pandas]"
python -c "import torch, sentence_transformers, lancedb, prefect, pandas, snowballstemmer; print(f'setup: torch {torch.__version__}, sentence-transformers {sentence_transformers.__version__}, lancedb {lancedb.__version__}, prefect {prefect.__version__}, pandas {pandas.__version__}')"
