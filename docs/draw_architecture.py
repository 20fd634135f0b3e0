"""Draws docs/architecture.svg: one request's path through the folders, the layers, the seams.

    python docs/draw_architecture.py      # rewrites docs/architecture.svg

Plain SVG written by hand (no plotting library); edit the tables below when the code moves.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

OUT = Path(__file__).with_name("architecture.svg")
WIDTH = 1240
MONO, SANS = "monospace", "sans-serif"

# The request path: (step, colour, [(module, what it does)], what it hands to the next step).
STEPS = [
    (
        "1  prepare: the prompt is a list of chunks",
        "#e8f1fb",
        [
            (
                "request/video.py · audio.py · image.py",
                "one modality per medium: preprocess(file) -> media chunk (decode, frames / log-mel / tiles)",
            ),
            (
                "request/chunks.py",
                "TextChunk | VideoChunk (+ its audio track, TEG) | AudioChunk | ImageChunk;"
                " each has a content id",
            ),
            (
                "request/prompt.py",
                "chat template with placeholders -> token ids cut at the placeholders -> chunks in order",
            ),
            (
                "plan.py  (timeline.py)",
                "layout(chunks) -> Plan: per position kind, source row, CRTE coordinates, time;"
                " Runs per chunk",
            ),
        ],
        "Prompt(chunks, input_ids, plan)",
    ),
    (
        "2  encode: each media chunk once",
        "#eaf6ec",
        [
            (
                "request/encode.py",
                "EncodedCache[content id] -> rows, else modality.encode(chunk, stages) -> banks by kind",
            ),
            (
                "stages.py  ->  runtime/stages.py · backend.py",
                "StageRunner: vision / audio / image_projector on ONNX Runtime"
                " (reference: the torch modules)",
            ),
        ],
        "banks: rows by kind",
    ),
    (
        "3  stitch: TEG gather + CRTE rotation",
        "#fdf3e3",
        [
            (
                "stitch/  select_stitch()",
                "numpy (reference) | cpp (libvinci_crte CPU kernel) | cuda (CUDA kernel) -> inputs_embeds",
            ),
        ],
        "inputs_embeds (S x D)",
    ),
    (
        "4  decode: one loop for reference and runtime",
        "#f6ebf8",
        [
            (
                "generation.py  generate()",
                "fit_context -> Decoder.prefill(embeds) -> Sampler -> Decoder.step(token) -> TokenStream",
            ),
            (
                "runtime/decoder.py",
                "OrtDecoder: KV cache in place; append / rewind / reset (reference: TorchDecoder)",
            ),
        ],
        "token ids -> text",
    ),
]

# The import-linter layers, top to bottom (pyproject.toml).
LAYERS = [
    (["cli"], "#d9d9d9"),
    (["quantization | profiling | live"], "#e0d4ee"),
    (["export"], "#f3d9c4"),
    (["model (torch reference) | runtime (torch-free)"], "#cfe3f5"),
    (["request | generation"], "#d6eedb"),
    (["plan | media | stitch"], "#fbe7c6"),
    (
        ["timeline | crte | manifest | text | presets |", "layout | output_folder | cli_options | svg"],
        "#eeeeee",
    ),
    (["config | tokens | stages | metrics | progress |", "sampling | assets"], "#f4f4f4"),
    (["errors | kinds | host"], "#fafafa"),
]

SEAMS = [
    (
        "Live streams (live/)",
        "#e8f1fb",
        [
            "sources -> bounded inbox -> one worker: each frame encoded",
            "as it comes; a segment = VideoChunk, AudioChunk (TEG)",
            "stitched + OrtDecoder.append; questions appended, rewound",
            "window: oldest segments out, kept ones re-prefilled",
        ],
    ),
    (
        "TensorRT / GPU",
        "#eaf6ec",
        [
            "a TensorRT StageRunner behind stages.Stages",
            "manifest.StageEntry / DecoderSpec per backend",
            "select_stitch('cuda'): CudaStitch -> device-resident",
        ],
    ),
    (
        "Serving many cameras",
        "#fdf3e3",
        [
            "one Stages per model, one session per stream:",
            "chunks + content ids are the unit a server batches",
        ],
    ),
]


class Sheet:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def rect(self, x, y, w, h, fill, stroke="#333", rx=8, dash=None) -> None:
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(
            f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="{rx}" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="1.2"{extra}/>'
        )

    def text(self, x, y, s, size=12.0, weight="normal", fill="#222", family=SANS) -> None:
        self.parts.append(
            f'<text x="{x}" y="{y}" font-family="{family}" font-size="{size}" font-weight="{weight}" '
            f'fill="{fill}">{escape(s)}</text>'
        )

    def line(self, x1, y1, x2, y2, color="#444", width=1.6, head=True) -> None:
        marker = ' marker-end="url(#arrow)"' if head else ""
        self.parts.append(
            f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="{color}" stroke-width="{width}"{marker}/>'
        )

    def svg(self, height: int) -> str:
        head = (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
            f'viewBox="0 0 {WIDTH} {height}">\n<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" '
            'refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
            '<path d="M0,0 L10,5 L0,10 z" fill="#444"/></marker></defs>\n'
            f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>'
        )
        return "\n".join([head, *self.parts, "</svg>"]) + "\n"


def draw_path(s: Sheet, x: int = 24, width: int = 700) -> int:
    """The request path down the left; returns where it ends."""
    s.text(x, 36, "vinci-edge: one request, top to bottom", 22, "bold")
    s.text(
        x,
        58,
        'cli.py: vinci-edge run --engine E --video clip.mp4 --prompt "What happens?"'
        "  ->  Pipeline.from_engine(E).ask(...)",
        12.5,
        fill="#555",
        family=MONO,
    )
    spine = "runtime/pipeline.py  Pipeline.ask() - the spine: it calls each step in turn, nothing calls back"
    s.text(x, 90, spine, 13, "bold", fill="#1a4b8c")
    y = top = 104
    for title, colour, rows, handoff in STEPS:
        h = 34 + 38 * len(rows)
        s.rect(x + 26, y, width - 26, h, colour)
        s.text(x + 40, y + 22, title, 15, "bold")
        for i, (module, what) in enumerate(rows):
            s.text(x + 48, y + 44 + 38 * i, module, 12.5, "bold", fill="#0b3d75", family=MONO)
            s.text(x + 48, y + 60 + 38 * i, what, 12)
        s.line(x + 10, y + 18, x + 24, y + 18, color="#1a4b8c")
        y += h + 24
        s.line(x + 80, y - 24, x + 80, y)
        s.text(x + 92, y - 8, handoff, 12, "bold", fill="#7a3b00", family=MONO)
    s.line(x + 10, top - 6, x + 10, y - 58, color="#1a4b8c", width=3, head=False)
    s.rect(x + 26, y, width - 26, 34, "#ffffff", stroke="#888")
    out = "text streams out (on_text / stream()); --json adds timings, plan, cached_chunks"
    s.text(x + 40, y + 22, out, 12.5)
    return y + 34


def draw_layers(s: Sheet, x: int = 760, width: int = 456) -> int:
    s.text(x, 100, "Layers: imports only point down", 15, "bold")
    s.text(x, 118, "(import-linter contracts in pyproject.toml, checked in CI)", 11.5, fill="#555")
    y = 132
    for lines, colour in LAYERS:
        h = 14 + 18 * len(lines)
        s.rect(x, y, width, h, colour, rx=5)
        for i, text in enumerate(lines):
            s.text(x + 12, y + 20 + 18 * i, text, 12.5, family=MONO)
        y += h + 6
    notes = [
        '"|": siblings that may not import each other.',
        "The runtime path (runtime, request, generation, plan, stitch,",
        "media, manifest) imports no torch / transformers / onnx.",
    ]
    for i, note in enumerate(notes):
        s.text(x, y + 14 + 16 * i, note, 11.5, fill="#555")
    return y + 76


def draw_seams(s: Sheet, y: int, x: int = 760, width: int = 456) -> int:
    s.text(x, y, "Seams the next issues plug into", 15, "bold")
    for title, colour, lines in SEAMS:
        h = 30 + 17 * len(lines)
        s.rect(x, y + 12, width, h, colour, dash="5,3")
        s.text(x + 12, y + 32, title, 13, "bold")
        for i, line in enumerate(lines):
            s.text(x + 12, y + 50 + 17 * i, line, 12)
        y += h + 10
    return y + 12


def main() -> None:
    sheet = Sheet()
    bottom = max(draw_path(sheet), draw_seams(sheet, draw_layers(sheet)))
    OUT.write_text(sheet.svg(bottom + 20))


if __name__ == "__main__":
    main()
