#!/usr/bin/env bash
# Conditional GAN quick preset on MNIST under a few stabilisers, each scored by `genzoo eval` (recall
# exposes intra-class mode collapse). Run on a GPU machine (each variant ~30 s on an H200); on such a
# machine without offline data, MNIST's raw IDX files are expected gzipped in .devdata/.
set -uo pipefail
OUT=${OUT:-/tmp/gan-variants}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 GENZOO_CACHE=${GENZOO_CACHE:-/tmp/cache}
if [ -d .devdata ]; then
  export GENZOO_DATA=/tmp/genzoo-data; mkdir -p "$GENZOO_DATA/MNIST/raw"
  for f in .devdata/*.gz; do gunzip -c "$f" > "$GENZOO_DATA/MNIST/raw/$(basename "$f" .gz)"; done
  python3 -m pip install -q --no-deps --no-build-isolation --target /tmp/site . >/dev/null 2>&1 && export PYTHONPATH=/tmp/site
fi
cd /tmp  # not the checkout: its genzoo/ folder would shadow the installed package
run() { name=$1; shift
  python3 -m genzoo train gan --dataset mnist --preset quick --out "/tmp/r-$name" --no-progress \
    --set model.class_cond=true "$@" >/dev/null 2>&1
  python3 -m genzoo eval "/tmp/r-$name" --n 5000 --metrics fd,pr,is --no-progress 2>/dev/null > "$OUT/eval-$name.json"
  python3 -c "import json; m=json.load(open('$OUT/eval-$name.json'))['metrics']; \
print('$name', {k: round(m[k]['value'], 3) for k in ('fd', 'precision', 'recall', 'class_score', 'label_accuracy')})"
}
run base
run drep2 train.phase_repeats=2,1
run ttur train.phase_lr=4e-4,1e-4 train.beta1=0.0 train.beta2=0.9
run ns model.loss=ns
run r1 model.d_norm=none model.r1_gamma=10
run z128 model.z_dim=128
