#!/usr/bin/env bash
# GPU check: every technique for one short epoch on CUDA, then the benchmark's CPU and CUDA
# overhead and data-path figures and its CIFAR-shaped section on CUDA (cifar_cuda: batched
# augmentation, trainer vs bare loop, samples/s at 1k-50k images, channels_last); under 5
# minutes on one H100/H200.
#
# Meant for a GPU box that has torch (and tensorboard, rich, scikit-learn, matplotlib) but no
# package index: Hydra, OmegaConf, ANTLR's runtime and Torch-Pruning travel as wheels in .whl/
# and are installed into /tmp/site; the project itself runs from the source checkout.
# Fetch the wheels once, on a machine with pip access, in the repo root:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d .whl \
#       hydra-core==1.3.8 omegaconf==2.3.1 torch-pruning==1.6.1
#   python3 -m pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3   # sdist only on PyPI
# Then: bash scripts/gpu_check.sh      (summary files go to $OUT, else outputs/gpu_check)
set -uo pipefail
cd "$(dirname "$0")/.."
runs=outputs/gpu_check
report=${OUT:-$runs}
mkdir -p "$runs" "$report"
log="$report/gpu_check.log"
: > "$log"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed" | tee -a "$log"; exit 1; }
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
export MPLBACKEND=Agg PYTHONUNBUFFERED=1
python3 - <<'PY' 2>&1 | tee -a "$log"
import torch, hydra, omegaconf
assert torch.cuda.is_available(), "no CUDA device"
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| hydra", hydra.__version__,
      "| omegaconf", omegaconf.__version__)
PY
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1
failed=0
# The registry (pdl_experiments.techniques): every technique, with its quick settings.
mapfile -t quick < <(python3 -c "from pdl_experiments.techniques import QUICK, TECHNIQUES
for t in TECHNIQUES: print(t, *QUICK[t])")
for line in "${quick[@]}"; do
  read -r t overrides <<< "$line"
  start=$(date +%s%N)
  if python3 -m pdl_experiments.cli technique=$t trainer.device=cuda trainer.progress=none $overrides \
      "hydra.run.dir=$runs/$t" > "$runs/$t.log" 2>&1; then s=ok; else s=FAILED; failed=1; fi
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  printf '%-10s %-7s %5d.%01d s  %s\n' "$t" "$s" $((ms / 1000)) $((ms % 1000 / 100)) \
    "$(python3 -c "import json,sys; m=json.load(open('$runs/$t/metrics.json')); print({k: round(v, 4) for k, v in m.items() if k in ('test/acc', 'test/token_acc', 'gan/fid', 'prune/latency_ratio', 'run/wall_s')})" 2>/dev/null)" \
    | tee -a "$log"
  [ $s = ok ] || tail -5 "$runs/$t.log" | tee -a "$log"
done
python3 scripts/bench.py --only overhead cuda data cifar_cuda --out "$report/bench.json" --md "$report/bench.md" 2>&1 | tee -a "$log"
# DDP (trainer.devices=2, NCCL): only where there are two GPUs to give it.
gpus=$(python3 -c "import torch; print(torch.cuda.device_count())")
if [ "$gpus" -ge 2 ]; then
  if python3 -m pdl_experiments.cli trainer.devices=2 trainer.device=cuda trainer.progress=none trainer.max_epochs=3 \
      "hydra.run.dir=$runs/ddp" > "$runs/ddp.log" 2>&1; then s=ok; else s=FAILED; failed=1; fi
  echo "ddp (2 GPUs) $s: $(python3 -c "import json; print(json.load(open('$runs/ddp/env.json'))['world_size'])" 2>/dev/null) processes" | tee -a "$log"
  python3 scripts/bench.py --only ddp --out "$report/bench_ddp.json" --md "$report/bench_ddp.md" 2>&1 | tee -a "$log"
else
  echo "ddp: skipped ($gpus GPU; trainer.devices=2 on CUDA needs 2)" | tee -a "$log"
fi
exit $failed
