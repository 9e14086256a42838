#!/usr/bin/env bash
# Run every preset sweep on the bundled data (three seeds per setting) and write
# outputs/REPORT.md: each claim as mean ± ci95 with its verdict, the tables and plots.
# Jobs run two at a time (joblib launcher, one thread each). Then the slow tests
# (`pytest -m slow`: the BN acceptance runs over three seeds, torch.compile), unless
# SLOW_TESTS=0. See README "Reproducing the claims" for how long it takes here.
#   bash scripts/reproduce_all.sh [preset ...]      (PDL_RUN=... to use another pdl-run)
set -uo pipefail
cd "$(dirname "$0")/.."
VENV_BIN=$( [ -x .venv/bin/python ] && echo .venv/bin/ || echo "" )
PDL_RUN=${PDL_RUN:-${VENV_BIN}pdl-run}
PYTHON=${PYTHON:-${VENV_BIN}python3}
JOBS=${JOBS:-2}
OUT=outputs/reproduce
presets=("$@")
[ ${#presets[@]} -gt 0 ] || presets=(bn_ablation augmentation_study prune_sweep adv_eps attention_length nas_vs_random)
status=0
mkdir -p "$OUT"
touch "$OUT.timings"
for p in "${presets[@]}"; do
  echo "=== $p ($(date +%T))"
  rm -rf "${OUT:?}/$p"
  start=$(date +%s)
  $PDL_RUN -m "experiment=$p" trainer.progress=none trainer.num_threads=1 \
    hydra/launcher=joblib "hydra.launcher.n_jobs=$JOBS" "hydra.sweep.dir=$OUT/$p" > "$OUT.$p.log" 2>&1 \
    || { echo "    $p: some jobs failed (see $OUT.$p.log)"; status=1; }
  took=$(( $(date +%s) - start ))
  echo "    $p took $took s"
  { grep -v "^$p=" "$OUT.timings"; echo "$p=$took"; } > "$OUT.timings.tmp"; mv "$OUT.timings.tmp" "$OUT.timings"
done
"$PYTHON" scripts/make_report.py "$OUT" outputs/REPORT.md || status=1
if [ "${SLOW_TESTS:-1}" != 0 ]; then
  echo "=== pytest -m slow ($(date +%T))"
  start=$(date +%s)
  "$PYTHON" -m pytest -q -m slow -n "$JOBS" --dist load tests || { echo "    slow tests failed"; status=1; }
  took=$(( $(date +%s) - start ))
  echo "    slow tests took $took s"
  { grep -v "^slow_tests=" "$OUT.timings"; echo "slow_tests=$took"; } > "$OUT.timings.tmp"; mv "$OUT.timings.tmp" "$OUT.timings"
fi
exit $status
