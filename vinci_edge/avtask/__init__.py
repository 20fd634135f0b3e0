"""A procedural audio-visual task: seeded clips of coloured shapes and sound events at known times,
templated questions about them with their ground truth, and held-out splits written as real media.

    scene.py      what happens when (shapes on screen, sounds), sampled from one seed
    render.py     a scene -> RGB frames and 16 kHz samples
    speech.py     spoken words (Debian's espeak-ng), synthesised once and cached
    questions.py  the question templates by category, and their answers from the scene
    dataset.py    splits: clips written as MP4 (H.264 + AAC) with their questions as JSONL

Torch-free: numpy, PyAV and a subprocess.
"""
