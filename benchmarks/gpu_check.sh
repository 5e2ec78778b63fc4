#!/usr/bin/env bash
# GPU check of the shared trainer (bf16 autocast, channels_last, data on the GPU, torch.compile):
# trains the VAE's quick preset on real MNIST, samples, and measures training speed variants.
# Expects MNIST's raw IDX files gzipped in .devdata/ (the device machine has no offline source).
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 GENZOO_DATA=/tmp/genzoo-data
python3 -m pip install -q --no-deps --no-build-isolation --target /tmp/site . >/dev/null && export PYTHONPATH=/tmp/site
mkdir -p "$GENZOO_DATA/MNIST/raw"
for f in .devdata/*.gz; do gunzip -c "$f" > "$GENZOO_DATA/MNIST/raw/$(basename "$f" .gz)"; done
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
/usr/bin/time -f "vae quick wall %e s" python3 -m genzoo train vae --dataset mnist --preset quick --out "$OUT/vae-quick" --no-progress
python3 -m genzoo sample "$OUT/vae-quick" --n 100 --out "$OUT/vae-quick.png" --device cuda
rm -f "$OUT/vae-quick/checkpoint.pt"
python3 benchmarks/train_speed.py vae --dataset mnist --preset standard --steps 300 --repeats 2 \
  --variant fp32=train.amp=none --variant bf16=train.amp=bf16 --variant bf16_compile=train.amp=bf16,train.compile=true \
  | tee "$OUT/train_speed_standard.json"
python3 -m pytest -q -x tests/test_trainer.py tests/test_contract.py -p no:cacheprovider 2>&1 | tail -15
