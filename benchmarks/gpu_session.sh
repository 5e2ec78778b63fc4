#!/usr/bin/env bash
# One prepared GPU session (a lent device has ~15 minutes): everything below in priority order, each part
# under its own time limit, results appended to $OUT as they come.
#   1. quality sweeps that would cost CPU-hours: variants of the class-conditional pixel transformer's quick
#      preset (issue 5): train, FD, precision / recall and the classifier's accuracy on the requested labels
#      (n = 1000), a grid. (The sweeps of earlier sessions, dit and pixelcnn, are in results/sweep_quick_h100.jsonl.)
#   2. benchmarks/peers.py at the standard size (ours, ours in channels_last, diffusers, lucidrains; CUDA), in fp32
#      and then with every model under bf16 autocast;
#   3. benchmarks/family_costs.py at the standard presets (the README's GPU column);
#   4. ddpm standard: fp32 vs bf16 vs bf16 + torch.compile through the trainer.
# Expects MNIST's raw IDX files gzipped in .devdata/ and the peers' wheels in .whl/ (benchmarks/README.md).
# SMOKE=1 runs the same code paths with tiny presets on scikit-learn digits (a CPU check of this script).
set -uo pipefail
REPO=$(pwd); OUT=${OUT:-/tmp/gpu-session}; mkdir -p "$OUT/grids"
export PYTHONUNBUFFERED=1 GENZOO_DATA=${GENZOO_DATA:-/tmp/genzoo-data}
PY=${PY:-python3}
if [ -z "${SMOKE:-}" ]; then
  rm -rf /tmp/site; $PY -m pip install -q --no-index --no-deps --no-compile --no-build-isolation --target /tmp/site .whl/*.whl . >/dev/null \
    && export PYTHONPATH=/tmp/site || echo "wheel install failed"
  mkdir -p "$GENZOO_DATA/MNIST/raw"
  for f in .devdata/*.gz; do gunzip -c "$f" > "$GENZOO_DATA/MNIST/raw/$(basename "$f" .gz)"; done
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  DS=mnist; Q=quick; STD=standard; PSIZE=standard; N=1000; PSTEPS=4; FSTEPS=60; SN=256; DEV=cuda
else
  DS=digits; Q=tiny; STD=tiny; PSIZE=quick; N=50; PSTEPS=1; FSTEPS=5; SN=8; DEV=cpu
fi
cd /tmp  # not the checkout: its genzoo/ folder would shadow the installed package
$PY -c "import torch, genzoo; print('torch', torch.__version__, genzoo.__file__)"
T0=$(date +%s)
left() { echo $(( ${BUDGET:-520} - ($(date +%s) - T0) )); }
want() { [[ ",${PARTS:-1,2,3,4}," == *",$1,"* ]]; }  # PARTS=1,4 runs only parts 1 and 4

sweep() {  # NAME FAMILY OVERRIDES...
  local name=$1 fam=$2; shift 2
  [ $(( $(date +%s) - T0 )) -gt ${SWEEP_S:-280} ] && { echo "skip $name: the sweep's time is used"; return; }
  local t=$(date +%s)
  timeout $(( ${SWEEP_S:-280} + 30 - ($(date +%s) - T0) )) $PY -m genzoo train "$fam" --dataset $DS --preset $Q --out "/tmp/sweep/$name" --no-progress \
    --set train.sample_every=0 "$@" >"/tmp/sweep/$name.log" 2>&1 || { echo "$name: train failed"; tail -5 "/tmp/sweep/$name.log"; return; }
  local tt=$(( $(date +%s) - t ))
  timeout 120 $PY -m genzoo eval "/tmp/sweep/$name" --n $N --metrics fd,pr,is --device $DEV --out "/tmp/sweep/$name.json" >/dev/null 2>&1
  timeout 60 $PY -m genzoo sample "/tmp/sweep/$name" --n 100 --device $DEV --out "$OUT/grids/$name.png" >/dev/null 2>&1
  $PY - "$name" "$tt" "/tmp/sweep/$name.json" "$*" <<'EOF' | tee -a "$OUT/sweep.jsonl"
import json, sys
name, secs, path, sets = sys.argv[1:]
try:
    m = json.load(open(path))["metrics"]
    row = {k: round(v["value"], 4) if isinstance(v["value"], float) else v["value"] for k, v in m.items()}
except Exception as e:
    row = {"error": repr(e)}
print(json.dumps({"run": name, "overrides": sets, "train_s": int(secs), **row}))
EOF
}

mkdir -p /tmp/sweep
if want 1 && [ -n "${SWEEP_FILE:-}" ]; then echo "== 1. quality sweeps of $SWEEP_FILE ($(left) s left)"; source "$REPO/$SWEEP_FILE"
elif want 1; then
  echo "== 1. quality sweeps ($(left) s left)"
  sweep tr-base transformer
  sweep tr-every transformer --set model.class_every=true
  sweep tr-every-b8 transformer --set model.class_every=true train.batch_size=8
  sweep tr-every-x2 transformer --set model.class_every=true train.steps=2240
fi

echo "== 2. peers at the standard size ($(left) s left)"
want 2 && [ "$(left)" -gt 60 ] && timeout $(( $(left) - 30 )) $PY "$REPO/benchmarks/peers.py" --size $PSIZE --batch 64 --sample-batch 64 \
  --train-steps 10 --repeats $PSTEPS --device $DEV --models ours,ours_cl,lucidrains,diffusers > "$OUT/peers.json" 2>"$OUT/peers.err"
grep -A12 '"train_ratio"' "$OUT/peers.json" | head -30
want 2 && [ "$(left)" -gt 60 ] && timeout $(( $(left) - 30 )) $PY "$REPO/benchmarks/peers.py" --size $PSIZE --batch 64 --sample-batch 64 \
  --train-steps 10 --repeats $PSTEPS --device $DEV --models ours,ours_cl,lucidrains,diffusers --amp bf16 --no-memory \
  > "$OUT/peers_bf16.json" 2>"$OUT/peers_bf16.err"; grep -A12 '"train_ratio"' "$OUT/peers_bf16.json" | head -30

echo "== 3. every family's cost at the standard presets ($(left) s left)"
want 3 && [ "$(left)" -gt 60 ] && timeout $(( $(left) - 10 )) $PY "$REPO/benchmarks/family_costs.py" --dataset $DS --preset $STD --steps $FSTEPS ${FAMILIES:+--families $FAMILIES} \
  --sample-n $SN --markdown > "$OUT/family_costs.json" 2>"$OUT/family_costs.err"; tail -14 "$OUT/family_costs.err"

echo "== 4. ddpm standard: fp32 / bf16 / bf16 + compile ($(left) s left)"
want 4 && [ "$(left)" -gt 90 ] && timeout $(( $(left) - 5 )) $PY "$REPO/benchmarks/train_speed.py" ddpm --dataset $DS --preset $STD --steps 100 \
  --repeats 1 --variant fp32=train.amp=none --variant bf16=train.amp=bf16 --variant bf16_compile=train.amp=bf16,train.compile=true \
  > "$OUT/train_speed_ddpm.json"; cat "$OUT/train_speed_ddpm.json"
tar -C "$OUT" -cf "$OUT/grids.tar" grids && rm -rf "$OUT/grids"
echo "done in $(( $(date +%s) - T0 )) s"
