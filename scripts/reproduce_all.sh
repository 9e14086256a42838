#!/usr/bin/env bash
# Run every preset sweep on the bundled digits and write outputs/REPORT.md and docs/results.md
# (scripts/make_report.py): each claim with its figure, its verdict from paired seeds as a
# table, and the published number beside ours; the README's claims table too when it has the
# <!-- claims:start --> / <!-- claims:end --> markers.
# Jobs run two at a time (joblib launcher, one thread each). With SLOW_TESTS=1 the slow
# tests (`pytest -m slow`, ~10 CPU-minutes) follow. See docs/results.md.
#   bash scripts/reproduce_all.sh [--mnist5k | --mnist5k-only] [preset ...]
#     --mnist5k   also the real-digits presets (configs/experiment/*_mnist5k.yaml, the `mnist`
#                 extra) and augmentation_study, plain presets into outputs/reproduce like
#                 the others: the report's real-digits column. MNIST5K_PRESETS="..." to choose.
#     --mnist5k-only   those alone (the digits sweeps already there are kept for the report)
#   PDL_RUN=... to use another pdl-run; JOBS=n jobs at a time (default 2)
set -uo pipefail
cd "$(dirname "$0")/.."
VENV_BIN=$( [ -x .venv/bin/python ] && echo .venv/bin/ || echo "" )
PDL_RUN=${PDL_RUN:-${VENV_BIN}pdl-run}
PYTHON=${PYTHON:-${VENV_BIN}python3}
JOBS=${JOBS:-2}
MNIST5K=0
DIGITS=1
presets=()
for a in "$@"; do
  case "$a" in
    --mnist5k) MNIST5K=1 ;;
    --mnist5k-only) MNIST5K=1; DIGITS=0 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) presets+=("$a") ;;
  esac
done
[ ${#presets[@]} -gt 0 ] || presets=(bn_ablation augmentation_study prune_sweep adv_eps gan_losses attention_length nas_vs_random)
read -r -a mnist_presets <<< "${MNIST5K_PRESETS:-bn_ablation_mnist5k prune_sweep_mnist5k adv_eps_mnist5k gan_losses_mnist5k nas_vs_random_mnist5k augmentation_study}"
status=0

# sweep OUT PRESET [overrides...]: one preset sweep into OUT/PRESET, its time into OUT.timings
sweep() {
  local out=$1 p=$2; shift 2
  echo "=== $p $* ($(date +%T))"
  mkdir -p "$out"; touch "$out.timings"
  rm -rf "${out:?}/$p"
  local start; start=$(date +%s)
  $PDL_RUN -m "experiment=$p" "$@" trainer.progress=none trainer.num_threads=1 \
    hydra/launcher=joblib "hydra.launcher.n_jobs=$JOBS" "hydra.sweep.dir=$out/$p" > "$out.$p.log" 2>&1 \
    || { echo "    $p: some jobs failed (see $out.$p.log)"; status=1; }
  local took=$(( $(date +%s) - start ))
  echo "    $p took $took s"
  { grep -v "^$p=" "$out.timings"; echo "$p=$took"; } > "$out.timings.tmp"; mv "$out.timings.tmp" "$out.timings"
}

done_presets=" "
if [ "$DIGITS" = 1 ]; then
  for p in "${presets[@]}"; do
    sweep outputs/reproduce "$p"; done_presets+="$p "
  done
fi
if [ "$MNIST5K" = 1 ]; then
  for p in "${mnist_presets[@]}"; do
    [ -f "configs/experiment/$p.yaml" ] || { echo "    $p: no such preset yet, skipped"; continue; }
    [[ "$done_presets" == *" $p "* ]] || sweep outputs/reproduce "$p"
  done
fi
readme=()
grep -q "<!-- claims:start -->" README.md && readme=(--readme README.md)
"$PYTHON" scripts/make_report.py outputs/reproduce outputs/REPORT.md "${readme[@]}" || status=1
if [ "${SLOW_TESTS:-0}" = 1 ]; then
  echo "=== pytest -m slow ($(date +%T))"
  start=$(date +%s)
  "$PYTHON" -m pytest -q -m slow -n "$JOBS" --dist load tests || { echo "    slow tests failed"; status=1; }
  took=$(( $(date +%s) - start ))
  echo "    slow tests took $took s"
  { grep -v "^slow_tests=" outputs/reproduce.timings; echo "slow_tests=$took"; } > outputs/reproduce.timings.tmp
  mv outputs/reproduce.timings.tmp outputs/reproduce.timings
fi
exit $status
