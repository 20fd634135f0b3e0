#!/usr/bin/env bash
# Rebuild the shipped trained checkpoint (checkpoints/avtask) from its seed, and measure it: the
# held-out task accuracy per precision (PyTorch reference, fp32 engine, every quantized variant) and
# the small CI subset the tests check it against. About 53 min of training on 2 idle CPU cores, then
# about 15 min of export, quantization and evaluation. Everything goes under work-dirs/avtask-run/
# (replaced on each run); `--ship` then copies the checkpoint into checkpoints/avtask and the
# reports into docs/avtask/.
#
#   bash scripts/train-avtask.sh [--ship] [--checkpoint DIR] [extra `vinci-edge train` options]
#
# --checkpoint DIR measures a checkpoint trained before (e.g. by `vinci-edge train`) instead of
# training one.
set -euo pipefail
cd "$(dirname "$0")/.."
SHIP=0
TRAINED=""
while [ $# -gt 0 ]; do
  case "$1" in
    --ship) SHIP=1; shift ;;
    --checkpoint) TRAINED=$2; shift 2 ;;
    *) break ;;
  esac
done
VE=.venv/bin
RUN=work-dirs/avtask-run
mkdir -p "$RUN"
say() { echo "[train-avtask] $*" >&2; }

if [ -n "$TRAINED" ]; then
  say "measuring $TRAINED"
  rm -rf "$RUN/checkpoint" && cp -r "$TRAINED" "$RUN/checkpoint"
else
  say "training (vinci-edge train $*)"
  $VE/vinci-edge train --out "$RUN/checkpoint" --force "$@"
fi
$VE/vinci-edge export --checkpoint "$RUN/checkpoint" --out "$RUN/fp32" --force

say "held-out test split (250 clips) and calibration clips (16 held-out clips after the test set)"
$VE/vinci-edge task-split --out "$RUN/test" --clips 250 --force
$VE/vinci-edge task-split --out "$RUN/calib" --start 1000 --clips 16 --force
CALIB=()
for clip in "$RUN"/calib/clips/*.mp4; do CALIB+=(--calib-video "$clip"); done
$VE/python -c "import json; [print(json.loads(l)['question']) for l in open('$RUN/calib/questions.jsonl')]" \
  > "$RUN/calib/questions.txt"
CALIB+=(--calib-text "$RUN/calib/questions.txt")

VARIANTS=(int8-dynamic int8 fp8 int4 int4-dq int8-compute "mixed=vision=int8,audio=int8,decoder=int4")
ENGINES=(--engine "fp32=$RUN/fp32")
for v in "${VARIANTS[@]}"; do
  name=${v%%=*}; spec=${v#*=}
  say "quantizing: $name ($spec)"
  $VE/vinci-edge quantize --engine "$RUN/fp32" --out "$RUN/$name" --precision "$spec" "${CALIB[@]}" --force
  ENGINES+=(--engine "$name=$RUN/$name")
done

say "task accuracy: every engine on the held-out split"
$VE/vinci-edge task-eval --split "$RUN/test" "${ENGINES[@]}" --out "$RUN/report"
# The PyTorch reference answers ~10x slower than the engines on 2 cores: it is compared with the
# fp32 engine question by question on the first 60 clips (~850 questions).
say "the reference against the fp32 engine, question by question (first 60 clips)"
$VE/vinci-edge task-eval --split "$RUN/test" --clips 60 --checkpoint "$RUN/checkpoint" \
  --engine "fp32=$RUN/fp32" --out "$RUN/reference"

say "the CI subset (first 6 held-out clips, fp32 engine): recorded beside the checkpoint"
$VE/vinci-edge task-eval --split "$RUN/test" --clips 6 --engine "fp32=$RUN/fp32" --out "$RUN/ci"
$VE/python - "$RUN" <<'PY'
import json, sys
run = sys.argv[1]
acc = json.load(open(f"{run}/ci/task_accuracy.json"))["runs"][0]["accuracy"]["overall"]
json.dump({"clips": 6, "right": acc["right"], "n": acc["n"], "engine": "fp32"},
          open(f"{run}/checkpoint/ci_subset.json", "w"), indent=2)
PY

if [ "$SHIP" = 1 ]; then
  say "shipping: checkpoints/avtask and docs/avtask/"
  rm -rf checkpoints/avtask && mkdir -p checkpoints && cp -r "$RUN/checkpoint" checkpoints/avtask
  mkdir -p docs/avtask
  cp "$RUN"/report/task_accuracy.md "$RUN"/report/task_accuracy.svg docs/avtask/
  cp "$RUN"/reference/task_accuracy.md docs/avtask/reference_vs_fp32.md
  $VE/python -c "import json; r=json.load(open('$RUN/report/task_accuracy.json')); r.pop('answers'); json.dump(r, open('docs/avtask/task_accuracy.json','w'), indent=2)"
fi
say "done: $RUN/report/task_accuracy.md"
