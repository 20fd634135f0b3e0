"""Special tokens shared by the tokenizer, the prompt builder and the checkpoint writer.

The names are those of the official OmniVinci (VILA) code, so a real `nvidia/omnivinci` tokenizer and
one written by `vinci-edge init-checkpoint` are used the same way.
"""

from __future__ import annotations

from vinci_edge.kinds import Kind

IMAGE = "<image>"
VIDEO = "<vila/video>"
SOUND = "<sound>"
SENTINEL = "<vila/sentinel>"

MEDIA_TOKENS: dict[Kind, str] = {Kind.IMAGE: IMAGE, Kind.VIDEO: VIDEO, Kind.AUDIO: SOUND}

# Wrapped around a media placeholder when the config sets `mm_use_bos_eos_tokens`.
MM_BOS_EOS_TOKENS: dict[Kind, tuple[str, str]] = {
    Kind.IMAGE: ("<|image_bos|>", "<|image_eos|>"),
    Kind.VIDEO: ("<|video_bos|>", "<|video_eos|>"),
    Kind.AUDIO: ("<|sound_bos|>", "<|sound_eos|>"),
}

# ChatML, as used by Qwen2 (and by SmolLM2).
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"

# Every token a vinci-edge checkpoint's tokenizer must hold as one special token.
REQUIRED_SPECIAL_TOKENS: tuple[str, ...] = (
    ENDOFTEXT,
    IM_START,
    IM_END,
    IMAGE,
    VIDEO,
    SOUND,
    SENTINEL,
    *(t for pair in MM_BOS_EOS_TOKENS.values() for t in pair),
)

# The separator between TEG segments and the default end token of media encoders.
NEWLINE = "\n"
