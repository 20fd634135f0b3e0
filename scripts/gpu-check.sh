#!/usr/bin/env bash
# One GPU check, sized to finish in under 8 minutes on one GPU (docs/gpu.md "The GPU check"):
#   1. vinci-edge doctor (report + JSON)                                   ~10 s
#   2. the GPU tests: CUDA stitch kernel, TensorRT and ORT-CUDA backends   ~2-3 min (tiny engine export
#      included; SKIPPED tests are listed, never counted as passed)
#   3. a tiny engine end to end on ort-cpu, ort-cuda and tensorrt, each answer's token ids compared
#      with the CPU's                                                       ~1-2 min
#   4. a short latency profile (vinci-edge profile, CPU and CUDA provider)  ~1 min
# Everything it writes goes to $OUT (or ./gpu-check-out): logs, doctor.json, answers, profile/.
# Exit status: 0 when every step ran and passed; 1 otherwise (the summary says which step).
#
# Needs vinci-edge installed with [gpu,export,dev] (onnxruntime-gpu, cuda-python, torch for the
# tiny export) and TensorRT's Python package; nothing is downloaded. PYTHON picks the interpreter.
set -uo pipefail

OUT="${OUT:-$PWD/gpu-check-out}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
VE=("$PYTHON" -m vinci_edge.cli)
declare -A RESULT
start_all=$(date +%s)

step() {  # step NAME TIMEOUT_S COMMAND...: run with a time limit, log to $OUT/NAME.log
  local name=$1 limit=$2
  shift 2
  local t0=$(date +%s)
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  RESULT[$name]="rc=$rc $(( $(date +%s) - t0 ))s"
  echo "   $name: ${RESULT[$name]}"
  tail -n 3 "$OUT/$name.log" | sed 's/^/   | /'
  return $rc
}

# 1. doctor: the report, then the JSON; requiring both GPU backends makes a missing one fail here.
step doctor 60 "${VE[@]}" doctor --require ort-cuda --require tensorrt
"${VE[@]}" doctor --json >"$OUT/doctor.json" 2>/dev/null

# 2. the GPU tests (-ra lists every skip with its reason)
step gpu-tests 240 "$PYTHON" -m pytest tests/gpu -q -ra -p no:cacheprovider --junitxml="$OUT/gpu-tests.xml"
grep -E "^SKIPPED" "$OUT/gpu-tests.log" >"$OUT/gpu-tests-skipped.txt" || true

# 3. a tiny engine end to end on each backend, compared with the CPU
WORK="$OUT/work"
rm -rf "$WORK"
mkdir -p "$WORK"
step tiny-engine 120 bash -c "
  '$PYTHON' -m vinci_edge.cli init-checkpoint --preset tiny --out '$WORK/ckpt' &&
  '$PYTHON' -m vinci_edge.cli export --checkpoint '$WORK/ckpt' --out '$WORK/engine' --max-context 2048 --force &&
  '$PYTHON' -c 'from vinci_edge.media.synth import make_test_clip; make_test_clip(\"$WORK/clip.mp4\", seconds=4.0)' &&
  '$PYTHON' -m vinci_edge.cli build-engines --engine '$WORK/engine' --dry-run &&
  '$PYTHON' -m vinci_edge.cli build-engines --engine '$WORK/engine' --json > '$OUT/build-engines.json'"
for backend in ort-cpu ort-cuda tensorrt; do
  step "answer-$backend" 90 "${VE[@]}" run --engine "$WORK/engine" --backend "$backend" \
    --video "$WORK/clip.mp4" --prompt "What happens?" --max-new-tokens 16 --json
  grep -E '^\{' "$OUT/answer-$backend.log" >"$OUT/answer-$backend.json" || true
done
step parity 30 "$PYTHON" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def ids(name):
    f = out / f"answer-{name}.json"
    return json.loads(f.read_text())["token_ids"] if f.is_file() and f.stat().st_size else None
cpu = ids("ort-cpu")
assert cpu, "no CPU answer"
bad = []
for name in ("ort-cuda", "tensorrt"):
    got = ids(name)
    if got is None:
        print(f"{name}: no answer (see answer-{name}.log)"); bad.append(name); continue
    n = min(len(got), len(cpu)); same = sum(a == b for a, b in zip(got, cpu)) / max(n, 1)
    print(f"{name}: {same:.0%} of {n} tokens equal the CPU's"); bad += [name] if same < 0.75 else []
sys.exit(1 if bad else 0)
EOF

# 4. a short latency profile: CPU and the CUDA provider side by side
step profile 120 "${VE[@]}" profile --engine "$WORK/engine" --video "$WORK/clip.mp4" \
  --max-new-tokens 16 --runs 3 --warmup 1 --out "$OUT/profile" --compare "$WORK/engine@cuda"

echo
echo "== summary ($(( $(date +%s) - start_all )) s; outputs in $OUT)"
status=0
for name in doctor gpu-tests tiny-engine answer-ort-cpu answer-ort-cuda answer-tensorrt parity profile; do
  echo "   $name: ${RESULT[$name]:-not run}"
  [[ "${RESULT[$name]:-rc=1}" == rc=0* ]] || status=1
done
skipped=$(wc -l <"$OUT/gpu-tests-skipped.txt" 2>/dev/null || echo 0)
echo "   GPU tests skipped: $skipped (listed in gpu-tests-skipped.txt; skipped is not passed)"
exit $status
