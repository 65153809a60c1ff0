#!/usr/bin/env bash
# experiment=robust on a lent GPU, in one call (the device tool's run; $OUT comes back):
#   1. train the robust registry (trainer=gpu), 2. evaluate the goal model and the certified
#   model on CUDA with every row on all 1,986 test images, 3. the README's whole GPU command
#   (members already registered are skipped; cells already computed come from the cache).
# Each stage has its own time limit, so what finished comes back even if a later stage runs out.
# Usage (repo root, the machine's python3 holding torch): bash benchmarks/gpu_robust.sh [budget_s]
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
BUDGET=${1:-560}
start=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - start) )); }
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD/src || exit 1
fi
{ nvidia-smi -L; python3 -c "import torch, hydra, kornia, pytorch_lightning as pl; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'pl', pl.__version__, 'kornia', kornia.__version__)"; nproc; } 2>&1 | tee "$OUT/env.log"
pack() {  # what exists so far, into $OUT (at most 8 files come back)
  tar czf "$OUT/models_robust.tgz" models/robust 2>/dev/null
  tar czf "$OUT/outputs.tgz" --exclude='*.ckpt' outputs logs/train 2>/dev/null
  tar czf "$OUT/cache.tgz" logs/evaluate/cache 2>/dev/null
}
t=$(date +%s)
timeout $(( $(left) - 300 )) python3 train.py experiment=robust trainer=gpu pipeline.evaluate=false \
  > "$OUT/train.log" 2>&1; echo "train rc=$? $(( $(date +%s) - t )) s" | tee -a "$OUT/stages.log"
pack
t=$(date +%s)
timeout $(( $(left) - 20 )) python3 evaluate.py paths.models_dir=models/robust eval.experiment=robust \
  eval.device=cuda eval.attacks.pgd.restarts=5 'eval.models=[stacker_adv_mean,ablation-k20]' \
  name=robust_goal_model eval.progress=false > "$OUT/eval_goal.log" 2>&1
echo "eval goal model rc=$? $(( $(date +%s) - t )) s" | tee -a "$OUT/stages.log"
pack
if [ "$(left)" -gt 60 ]; then
  t=$(date +%s)
  timeout $(( $(left) - 15 )) python3 train.py experiment=robust trainer=gpu eval.device=cuda \
    > "$OUT/eval_all.log" 2>&1
  echo "experiment=robust (all models) rc=$? $(( $(date +%s) - t )) s" | tee -a "$OUT/stages.log"
  pack
fi
echo "total $(( $(date +%s) - start )) s" | tee -a "$OUT/stages.log"
