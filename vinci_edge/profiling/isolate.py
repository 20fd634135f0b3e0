"""Profile one engine in a fresh Python process, so its peak RSS is its own.

A process's peak RSS only grows: profiling two engines one after the other in one process would
report the larger engine's peak for both. The child runs `profile_engine` and writes its result as
JSON; its progress lines go straight to our stderr. A vinci-edge error in the child (a missing file,
an unavailable provider) comes back as the same error type here, so the CLI reports it the same way.

    python -m vinci_edge.profiling.isolate JOB.json RESULT.json
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from vinci_edge import errors
from vinci_edge.profiling.profiler import EngineTarget, RequestSpec, profile_engine
from vinci_edge.progress import Progress, to_stderr_as


def profile_in_subprocess(
    target: EngineTarget, req: RequestSpec, say: Progress | None = None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vinci-profile-") as tmp:
        job, result = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job.write_text(json.dumps({"target": asdict(target), "request": asdict(req)}))
        proc = subprocess.run([sys.executable, "-m", __name__, str(job), str(result)], check=False)
        if not result.is_file():
            raise errors.VinciEdgeError(
                f"profiling {target.label} failed: its process exited with status {proc.returncode}",
                hint="run with --in-process to see the traceback",
            )
        out = json.loads(result.read_text())
    if "error" in out:
        err = out["error"]
        cls = getattr(errors, err["type"], errors.VinciEdgeError)
        raise cls(err["message"], hint=err["hint"])
    return out["profile"]


def main(argv: list[str]) -> int:
    job_path, result_path = Path(argv[0]), Path(argv[1])
    job = json.loads(job_path.read_text())

    try:
        profile = profile_engine(
            EngineTarget(**job["target"]), RequestSpec(**job["request"]), to_stderr_as("profile")
        )
    except errors.VinciEdgeError as exc:
        error = {"type": type(exc).__name__, "message": exc.message, "hint": exc.hint}
        result_path.write_text(json.dumps({"error": error}))
        return 2
    result_path.write_text(json.dumps({"profile": profile}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
