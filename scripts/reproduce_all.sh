#!/usr/bin/env bash
# Run every preset sweep on the bundled data and write outputs/REPORT.md with the tables
# and plots: the course's claims, measured. About 20 minutes on a 2-core CPU.
#   bash scripts/reproduce_all.sh [preset ...]      (PDL_RUN=... to use another pdl-run)
set -uo pipefail
cd "$(dirname "$0")/.."
PDL_RUN=${PDL_RUN:-pdl-run}
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
  $PDL_RUN -m "experiment=$p" trainer.progress=none "hydra.sweep.dir=$OUT/$p" > "$OUT.$p.log" 2>&1 \
    || { echo "    $p: some jobs failed (see $OUT.$p.log)"; status=1; }
  took=$(( $(date +%s) - start ))
  echo "    $p took $took s"
  { grep -v "^$p=" "$OUT.timings"; echo "$p=$took"; } > "$OUT.timings.tmp"; mv "$OUT.timings.tmp" "$OUT.timings"
done
"${PYTHON:-python3}" scripts/make_report.py "$OUT" outputs/REPORT.md
exit $status
