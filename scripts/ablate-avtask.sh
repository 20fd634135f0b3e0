#!/usr/bin/env bash
# The paper's ablations in miniature: the task model trained with the full recipe and without
# OmniAlignNet, TEG or CRTE, same steps and seeds, each exported and evaluated on the held-out split
# through its fp32 engine; then the table of accuracy per category with the paired changes from the
# full recipe (vinci_edge/evaluation/ablations.py). Everything goes under work-dirs/ablations/
# (a run whose checkpoint exists is kept: rerunning continues where it stopped).
#
#   bash scripts/ablate-avtask.sh [--steps 3500] [--tower-steps 1500] [--probe dense|pooled]
#       [--seeds "0 1"] [--clips 250] [--ablations "..."] [--threads N]
#
# --steps, --tower-steps and --probe are `vinci-edge train`'s (defaults: the shipped recipe's); the
# runs of one setting go to work-dirs/ablations/towers-T-steps-S-PROBE/. On 2 idle cores a joint
# step takes about 0.75 s and a towers' step 0.37 s (the shipped recipe: 53 min a run). Two
# instances with one seed and one thread each train side by side; a last one with all the seeds
# finds every run trained and only evaluates.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=3500
TOWERS=1500
PROBE=dense
SEEDS="0 1"
CLIPS=250
ABLATIONS="none no-align no-teg no-crte"
THREADS=0
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) STEPS=$2; shift 2 ;;
    --tower-steps) TOWERS=$2; shift 2 ;;
    --probe) PROBE=$2; shift 2 ;;
    --seeds) SEEDS=$2; shift 2 ;;
    --clips) CLIPS=$2; shift 2 ;;
    --ablations) ABLATIONS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    *) echo "error: unknown option $1" >&2
       echo "hint: bash scripts/ablate-avtask.sh [--steps N] [--tower-steps N] [--probe dense|pooled] [--seeds \"0 1\"] [--clips N] [--ablations \"none no-teg\"] [--threads N]" >&2
       exit 2 ;;
  esac
done
case "$PROBE" in
  dense|pooled) ;;
  *) echo "error: --probe $PROBE is not dense or pooled" >&2; exit 2 ;;
esac
case " $ABLATIONS " in
  *" none "*) ;;
  *) echo "error: --ablations must include none (the deltas are against the full recipe)" >&2; exit 2 ;;
esac
VE=.venv/bin
RUN=work-dirs/ablations/towers-$TOWERS-steps-$STEPS-$PROBE
mkdir -p "$RUN"
say() { echo "[ablate-avtask] $*" >&2; }

have=$($VE/python -c "import json,sys; print(json.load(open(sys.argv[1]))['clips'])" "$RUN/test/split.json" 2>/dev/null || true)
if [ "$have" != "$CLIPS" ]; then
  $VE/vinci-edge task-split --out "$RUN/test" --clips "$CLIPS" --force
fi
ENGINES=()
for a in $ABLATIONS; do
  for s in $SEEDS; do
    name=$a-s$s
    if [ ! -f "$RUN/$name/training_record.json" ]; then
      say "training $name ($TOWERS towers' steps, then $STEPS joint steps, $PROBE probe)"
      $VE/vinci-edge train --out "$RUN/$name" --steps "$STEPS" --tower-steps "$TOWERS" --probe "$PROBE" \
        --seed "$s" --ablation "$a" \
        --threads "$THREADS" --force
    fi
    if [ ! -f "$RUN/$name-fp32/manifest.json" ]; then
      $VE/vinci-edge export --checkpoint "$RUN/$name" --out "$RUN/$name-fp32" --force
    fi
    ENGINES+=(--engine "$name=$RUN/$name-fp32")
  done
done
say "task accuracy of every run on the held-out split ($CLIPS clips)"
$VE/vinci-edge task-eval --split "$RUN/test" "${ENGINES[@]}" --threads "$THREADS" --baseline "none-s${SEEDS%% *}" --out "$RUN/report"
$VE/python -m vinci_edge.evaluation.ablations --report "$RUN/report/task_accuracy.json" --out "$RUN/table"
say "the table: $RUN/table/ablations.md"
