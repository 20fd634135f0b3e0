"""Write a profile's four files: profile.json, profile.md, profile.html, trace.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vinci_edge.profiling.report import to_html, to_markdown
from vinci_edge.profiling.schema import validate
from vinci_edge.profiling.trace import chrome_trace

FILES = ("profile.json", "profile.md", "profile.html", "trace.json")


def write_outputs(profile: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """Write the files into `out` (created if needed); returns their paths by name."""
    problems = validate(profile)
    if problems:  # a bug in the profiler, not a user error: never write a file that breaks its schema
        raise ValueError("profile.json would not match its schema:\n  " + "\n  ".join(problems[:20]))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    texts = {
        "profile.json": json.dumps(profile, indent=1),
        "profile.md": to_markdown(profile),
        "profile.html": to_html(profile),
        "trace.json": json.dumps(chrome_trace(profile)),
    }
    paths = {}
    for name, text in texts.items():
        paths[name] = out / name
        paths[name].write_text(text)
    return paths
