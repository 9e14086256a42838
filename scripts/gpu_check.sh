#!/usr/bin/env bash
# GPU check: every technique for one short epoch on CUDA, plus the CUDA benchmark, in
# under 5 minutes. For a lent GPU machine that has torch but not Hydra: fetch the wheels
# first (on a machine with pip access, in the repo root):
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl \
#       hydra-core==1.3.2 omegaconf==2.3.0 antlr4-python3-runtime==4.9.3 rich markdown-it-py mdurl \
#       tensorboard tensorboard-data-server scikit-learn threadpoolctl joblib torch-pruning
# and carry .whl/ along; this script installs them into /tmp/site when present.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
export MPLBACKEND=Agg
out=${OUT:-outputs/gpu_check}
mkdir -p "$out"
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
declare -A short=(
  [bn]="trainer.max_epochs=1"
  [prune]="trainer.max_epochs=1 prune.finetune_epochs=1"
  [adv]="trainer.max_epochs=1"
  [gan]="trainer.max_epochs=1"
  [nas]="nas.search_epochs=1 nas.retrain_epochs=1"
  [attention]="trainer.max_epochs=1"
)
for t in bn prune adv gan nas attention; do
  start=$(date +%s.%N)
  python3 -m pdl_experiments.cli technique=$t trainer.device=cuda trainer.progress=none ${short[$t]} \
    "hydra.run.dir=$out/$t" > "$out/$t.log" 2>&1 && s=ok || s=FAILED
  printf '%-10s %-7s %6.1f s\n' "$t" "$s" "$(echo "$(date +%s.%N) - $start" | bc)"
done
python3 scripts/bench.py --only overhead cuda data --out "$out/bench.json"
