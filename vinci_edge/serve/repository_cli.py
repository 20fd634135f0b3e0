"""`vinci-edge serve --export-repo DIR`: write the engine as a Triton model repository instead of
serving it (vinci_edge/serve/repository.py), for a standalone `tritonserver` on a GPU host.

    vinci-edge serve --engine engine/ --export-repo repo/ --tensorrt
    tritonserver --model-repository repo/

`add_arguments(parser)` adds the options to the `serve` command; `cmd_serve` calls
`export_from_args(args)` first when `args.export_repo` is set (the repository takes the command's
--max-streams, --expire-seconds, --fps, --chunk-seconds and --max-new-tokens where it has them).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vinci_edge.progress import to_stderr_as

_say = to_stderr_as("serve")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--export-repo",
        type=Path,
        default=None,
        metavar="DIR",
        help="write a Triton model repository for a standalone tritonserver into DIR and exit "
        "(default: serve)",
    )
    p.add_argument(
        "--tensorrt",
        action="store_true",
        help="with --export-repo: run vision and audio through ONNX Runtime's TensorRT accelerator "
        "(default: ONNX Runtime's CUDA provider)",
    )
    p.add_argument(
        "--encoders",
        choices=("onnxruntime", "python"),
        default="onnxruntime",
        help="with --export-repo: the Triton backend of vision and audio (python: for a Triton without "
        "the onnxruntime backend) (default onnxruntime)",
    )
    p.add_argument(
        "--decoder-provider",
        default="cuda",
        help="with --export-repo: ONNX Runtime provider of the decoder inside Triton (default cuda)",
    )
    p.add_argument(
        "--link",
        action="store_true",
        help="with --export-repo: link the engine's files instead of copying (default: copy)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="with --export-repo: replace a repository exported before (default: refuse)",
    )


def export_from_args(args: argparse.Namespace) -> int:
    from vinci_edge.serve.repository import RepositoryFolderError, RepositoryOptions, export_repository

    live = {
        key: getattr(args, key)
        for key in ("fps", "chunk_seconds", "max_new_tokens")
        if getattr(args, key, None) is not None
    }
    options = RepositoryOptions(
        encoders=args.encoders,
        tensorrt=args.tensorrt,
        decoder_provider=args.decoder_provider,
        max_streams=getattr(args, "max_streams", 8),
        expire_seconds=getattr(args, "expire_seconds", 60.0),
        live=live,
        link=args.link,
        force=args.force,
    )
    _say(f"writing the model repository {args.export_repo} for {args.engine}")
    try:
        out = export_repository(args.engine, args.export_repo, options, progress=_say)
    except RepositoryFolderError as exc:  # the output-folder rule words it for --out
        raise RepositoryFolderError(_option(exc.message), _option(exc.hint)) from None
    print(out, flush=True)
    _say(f"run it with: tritonserver --model-repository {out}")
    return 0


def _option(text: str | None) -> str | None:
    return None if text is None else text.replace("--out", "--export-repo")
