"""What the media rows of a trained checkpoint say, read by a fresh linear probe: for each video row,
the colour and the shape of what covers its cell; for each audio row, the sound heard there.

The towers and projectors are frozen; a linear classifier per label (the training probe's dense
labels, `training.batch.probe_labels`) is fitted on the rows of training clips and scored on the rows
of other training clips, so the figures say what the rows encode linearly, whichever probe (or none)
the checkpoint was trained with. Reported: accuracy over all rows and over the rows that show or
hear something (the background and silence are most rows and easy). A row can only say what the
LLM could read from it: shape at chance here means no question about shapes can be answered.

    python -m vinci_edge.training.row_probe --checkpoint checkpoints/avtask [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from vinci_edge.avtask.scene import COLOURS, SHAPES
from vinci_edge.errors import VinciEdgeError
from vinci_edge.output_folder import check_writable_dir, write_texts

OUT_NAME = "row_probe.json"
FIT_FROM, SCORE_FROM = 5000, 7000  # training seeds (the probe never sees a held-out clip)
FIT_STEPS = 400


def row_probe(checkpoint: Path, fit_clips: int = 96, score_clips: int = 48) -> dict[str, Any]:
    import torch

    from vinci_edge.model.checkpoint import load_model
    from vinci_edge.request.prompt import PromptBuilder
    from vinci_edge.text.tokenizer import TextTokenizer
    from vinci_edge.training.batch import SOUND_CLASSES, BatchMaker

    model = load_model(checkpoint)
    model.eval()
    maker = BatchMaker(model.cfg, PromptBuilder(model.cfg, TextTokenizer.from_folder(checkpoint / "llm")), 1)
    fit = _rows(model, maker, list(range(FIT_FROM, FIT_FROM + fit_clips)))
    score = _rows(model, maker, list(range(SCORE_FROM, SCORE_FROM + score_clips)))
    torch.manual_seed(0)
    result = {
        "checkpoint": str(checkpoint),
        "clips": {"fit": fit_clips, "score": score_clips},
    }
    for name, rows, column, classes in (
        ("video_colour", "video", 0, 1 + len(COLOURS)),  # the dense labels' classes (0: none)
        ("video_shape", "video", 1, 1 + len(SHAPES)),
        ("audio_sound", "audio", 0, len(SOUND_CLASSES)),
    ):
        x, y = fit[rows], fit[f"{rows}_labels"][:, column]
        xs, ys = score[rows], score[f"{rows}_labels"][:, column]
        predicted = _fit_linear(x, y, xs, classes)
        shown = ys > 0
        result[name] = {
            "all_rows": float((predicted == ys).float().mean()),
            "rows_with_content": float((predicted[shown] == ys[shown]).float().mean()),
            "rows_with_content_n": int(shown.sum()),
        }
    return result


def _rows(model, maker, seeds: list[int]) -> dict[str, Any]:
    import torch

    d = model.cfg.hidden_size
    video, audio, cells, sounds = [], [], [], []
    for i in range(0, len(seeds), 4):
        batch = maker.make(seeds[i : i + 4], np.random.default_rng(0), questions=False)
        with torch.no_grad():
            v = model.encode_frames(batch.pixels).reshape(-1, d)
            a = model.encode_audio(batch.mel).reshape(batch.clips, -1, d)[:, : batch.row_labels.shape[1]]
        video.append(v)
        audio.append(a.reshape(-1, d))
        cells.append(batch.cell_labels.reshape(-1, 2))
        sounds.append(batch.row_labels.reshape(-1, 1))
    cat = torch.cat
    return {"video": cat(video), "video_labels": cat(cells), "audio": cat(audio), "audio_labels": cat(sounds)}


def _fit_linear(x, y, x_score, classes: int):
    import torch
    import torch.nn.functional as F

    mean, std = x.mean(0), x.std(0) + 1e-6
    head = torch.nn.Linear(x.shape[1], classes)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(FIT_STEPS):
        loss = F.cross_entropy(head((x - mean) / std), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return head((x_score - mean) / std).argmax(-1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, type=Path, help="a checkpoint of the avtask preset")
    ap.add_argument("--out", type=Path, default=None, help=f"also write the figures to DIR/{OUT_NAME}")
    args = ap.parse_args(argv)
    if not (args.checkpoint / "config.json").is_file():
        print(f"error: {args.checkpoint} is not a checkpoint folder (no config.json)", file=sys.stderr)
        print("hint: give a folder written by `vinci-edge train`, e.g. checkpoints/avtask", file=sys.stderr)
        return 2
    if args.out is not None:
        try:
            check_writable_dir(args.out)  # before the minutes of work, not after
        except VinciEdgeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    result = row_probe(args.checkpoint)
    text = json.dumps(result, indent=2) + "\n"
    if args.out is not None:
        write_texts(args.out, {OUT_NAME: text})
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
