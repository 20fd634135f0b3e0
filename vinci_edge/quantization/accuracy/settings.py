"""What the accuracy report measures on: the text, the media, the prompts and the window sizes.

Files left None are found on the machine (Debian packages); `AccuracySettings.resolved` fills them
in and checks every file before any engine is loaded, so a bad setting is refused before minutes of
work.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vinci_edge.errors import ConfigError, MediaError

LICENSES = Path("/usr/share/common-licenses")
DEFAULT_TEXT = LICENSES / "GPL-3"  # left out of the default calibration text (calibration.py)
DEFAULT_VIDEO = Path("/usr/share/forensics-samples/original-files/movie2/movie-hello.mp4")
DEFAULT_AUDIO = Path("/usr/share/sounds/alsa/Front_Center.wav")
DEFAULT_IMAGE = Path("/usr/share/doc/opencv-doc/examples/data/fruits.jpg")


@dataclass
class Prompt:
    question: str
    media: str = "text"  # text | video | audio | image: which of the settings' files goes with it


DEFAULT_PROMPTS = (
    Prompt("Describe what happens in this clip.", "video"),
    Prompt("What do you hear in this recording?", "audio"),
    Prompt("Explain in two sentences what free software is and why it matters."),
    Prompt("What is the capital of France, and what is it famous for?"),
    Prompt("Write a short poem about the sea."),
)


@dataclass
class AccuracySettings:
    """What the measurements run on. Files left None are found on the machine (Debian packages)."""

    text: Path | None = None
    text_tokens: int = 512  # per window
    text_windows: int = 2  # consecutive windows, each from an empty cache
    text_offset: int = 0  # first token of the first window
    answer_tokens: int = 32
    video: Path | None = None
    audio: Path | None = None
    image: Path | None = None
    num_frames: int | None = None  # frames per video request (None: the model's default)
    prompts: tuple[Prompt, ...] = DEFAULT_PROMPTS
    decoder: bool = True  # False: towers only (e.g. a random-weight model, where perplexity is noise)

    def resolved(self) -> AccuracySettings:
        """Defaults filled in and every file checked, before any engine is loaded."""
        out = AccuracySettings(**{**asdict(self), "prompts": tuple(self.prompts)})
        if out.text is None and self.decoder:
            out.text = DEFAULT_TEXT if DEFAULT_TEXT.is_file() else _shipped_text()
        for name, default in (("video", DEFAULT_VIDEO), ("audio", DEFAULT_AUDIO), ("image", DEFAULT_IMAGE)):
            if getattr(out, name) is None and default.is_file():
                setattr(out, name, default)
        if out.text_tokens < 8:
            raise ConfigError(f"--tokens {out.text_tokens}: perplexity needs a window of 8 tokens or more")
        if out.text_windows < 1:
            raise ConfigError(f"--windows {out.text_windows} must be at least 1")
        if out.answer_tokens < 1:
            raise ConfigError(f"--answer-tokens {out.answer_tokens} must be at least 1")
        if out.text_offset < 0:
            raise ConfigError(f"--text-offset {out.text_offset} must not be negative")
        for name in ("video", "audio", "image"):
            path = getattr(out, name)
            if path is not None and not Path(path).is_file():
                raise MediaError(f"--{name} {path}: file not found", hint="check the path")
        if out.text is not None:
            read_text(Path(out.text))  # raises MediaError when missing or not text
        return out

    def record(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("text", "video", "audio", "image"):
            d[k] = None if d[k] is None else str(d[k])
        d["prompts"] = [asdict(p) for p in self.prompts]
        return d


def read_text(path: Path) -> str:
    if not path.is_file():
        raise MediaError(f"text file {path} does not exist", hint="pass plain English text with --text")
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise MediaError(
            f"{path} cannot be read as UTF-8 text ({exc})", hint="pass a plain-text file to --text"
        ) from exc
    if len(text.split()) < 16:
        raise MediaError(f"{path} holds too little text to measure perplexity on", hint="pass a longer file")
    return text


def _shipped_text() -> Path:
    from vinci_edge.text.english_corpus import __file__ as corpus

    return Path(corpus)
