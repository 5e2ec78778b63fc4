#!/usr/bin/env bash
# GPU check of the shared trainer (bf16 autocast, channels_last, data on the GPU, torch.compile):
# trains the VAE's quick preset on real MNIST, samples it, measures training-speed variants of the
# standard preset, and runs the trainer and contract tests with CUDA visible.
# Expects MNIST's raw IDX files gzipped in .devdata/ (the device machine has no offline source).
set -uo pipefail
REPO=$(pwd); OUT=${OUT:-/tmp/gpu-check}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 GENZOO_DATA=/tmp/genzoo-data
python3 -m pip install -q --no-deps --no-build-isolation --target /tmp/site . >/dev/null && export PYTHONPATH=/tmp/site
mkdir -p "$GENZOO_DATA/MNIST/raw"
for f in .devdata/*.gz; do gunzip -c "$f" > "$GENZOO_DATA/MNIST/raw/$(basename "$f" .gz)"; done
cd /tmp  # not the checkout: its genzoo/ folder would shadow the installed package
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
/usr/bin/time -f "vae quick wall %e s" python3 -m genzoo train vae --dataset mnist --preset quick --out "$OUT/vae-quick" --no-progress
grep '"event"' "$OUT/vae-quick/metrics.jsonl"
python3 -m genzoo sample "$OUT/vae-quick" --n 100 --out "$OUT/vae-quick.png" --device cuda
rm -f "$OUT/vae-quick/checkpoint.pt"
python3 "$REPO/benchmarks/train_speed.py" vae --dataset mnist --preset standard --steps 300 --repeats 2 \
  --variant fp32=train.amp=none --variant bf16=train.amp=bf16 --variant bf16_compile=train.amp=bf16,train.compile=true \
  | tee "$OUT/train_speed_standard.json"
python3 -c "import sys, pytest; sys.exit(pytest.main(['-q', '-x', '-p', 'no:cacheprovider', '$REPO/tests/test_trainer.py', '$REPO/tests/test_contract.py']))" 2>&1 | tail -15
