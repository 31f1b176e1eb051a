#!/bin/sh
# Creates the venv that runs infinity-emb, the OpenAI-compatible embedding server the HTTP
# provider's tests start on 127.0.0.1. It lives apart from the project's venv because
# infinity-emb 0.0.78 pins sentence-transformers<4 and numpy<2.
#   tests/providers/infinity-venv.sh [VENV_DIR]   (default: .venv-infinity)
set -eu
VENV="${1:-.venv-infinity}"
PYTHON="${PYTHON:-python3}"
TORCH="${TORCH:-torch==2.13.0}"
if [ -f "$VENV/.installed" ]; then
    exit 0
fi
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
# torch first, so nothing pulls a CUDA build
"$VENV/bin/pip" install --quiet "$TORCH"
"$VENV/bin/pip" install --quiet "infinity-emb[server,torch]==0.0.78" "$TORCH"
touch "$VENV/.installed"
