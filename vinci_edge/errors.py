"""Typed errors. Internal code raises these; each public entry point (CLI, Pipeline) turns them
into one clear message that says what is wrong and what to do about it."""

from __future__ import annotations


class VinciEdgeError(Exception):
    """Base class. `hint` says what the user can do about it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class ConfigError(VinciEdgeError):
    """A checkpoint or engine configuration is missing, malformed or inconsistent."""


class CheckpointError(VinciEdgeError):
    """A checkpoint folder is missing files or holds weights that do not match its config."""


class MediaError(VinciEdgeError):
    """A media file cannot be opened or decoded, or holds no usable stream."""


class PromptError(VinciEdgeError):
    """A prompt and its media do not fit together (marker/media mismatch, too long, ...)."""


class EngineError(VinciEdgeError):
    """An engine folder is missing, incomplete, or built for another model, schema or device."""


class MissingDependencyError(VinciEdgeError):
    """An optional dependency (a runtime extra, torch, ...) is not installed."""
