"""`int8-compute` (ONNX Runtime, CPU): int8 x int8 integer GEMMs, for time to first token.

The towers and the decoder's prefill are GEMM-bound (hundreds of positions per call), where an int8
GEMM on the CPU's integer instructions (VNNI / AMX on Intel, AVX2 u8 x s8 elsewhere) does several
times the fp32 work per second. `int8-dynamic` and `int4` do not get there at prefill shapes:
MatMulNBits converts its weights block by block and runs slower than fp32 GEMMs. Decode (one position
per call) is bound by reading the weights and by per-node overhead, where MatMulNBits is the fastest
kernel this project has. So the kernel depends on the phase, not the layer:

- towers: every weight MatMul -> DynamicQuantizeLinear + MatMulInteger (ONNX Runtime's
  `quantize_dynamic`, fused by it into DynamicQuantizeMatMul): ONE activation scale per call
  ("per-tensor"), int8 weights per output channel. "per-token" (below) is the other setting.
- decoder: two graphs over ONE weights file (the decode graph's `.data`, the same byte ranges):
  the decode graph (the stage's file) runs every linear layer as MatMulNBits 8-bit; the prefill
  graph (`decoder_prefill.onnx`, manifest `stages.decoder.prefill`) runs them as integer GEMMs with
  a scale per position ("per-token": one outlier position no longer crushes the others, which is
  what made int8-dynamic's matmul-integer method lose perplexity), except the kinds in
  `prefill_blockwise` (default: the q/k/v and the gate/up projections), which keep the decode graph's
  MatMulNBits there too: one scale over all of a position's channels is too coarse for them. The
  runtime sends appends of at least `min_positions` positions to the prefill graph, the rest to the
  decode graph, both bound to the same KV cache buffers. The LM head sees one position in both (the
  graph's logits are the last position's only): MatMulNBits 8-bit blocks of 32 in both.

Why two graphs and not one with an `If` on the sequence length: decode is bound by per-node
overhead (docs/quantization.md), and an If per linear layer adds a subgraph call per layer and token;
two graphs keep the decode graph exactly a weight-only graph and the prefill graph free of branches.
Weights once: both kernels read the same tensor - the int8 weight per output channel, stored
transposed as uint8 + 128 in MatMulNBits' 8-bit layout (N, K / 32, 32): blocks of 32 along K,
every block of a row with the row's scale - which the prefill graph reshapes to (N, K) and
transposes once at load for its integer GEMM. Both graphs name the same offsets of the one `.data`
file (as the portable decoder does); ONNX Runtime maps external data, so the raw int8 bytes are
stored once; each kernel packs its own copy at load (MatMulNBits, as in every int4 / int8-dynamic
engine, and the integer GEMM of the prefill graph: no fp32 copy anywhere).

Per-token integer GEMM (for a MatMul X (.., K) @ W (K, N)):
  X2 = Reshape(X, (-1, K)); s = max(ReduceMax(|X2|, axis 1), tiny) / Q          (M, 1)
  Xq = QuantizeLinear(X2, s, 128, axis 0) = round(X2 / s) + 128 as uint8   (M, K), per row
  B = Transpose(Reshape(the stored uint8 weight, (N, K)))    (K, N), zero point 128; folded at load
  Y = MatMulIntegerToFloat(Xq, B, 1, w_scale (N,), 128, 128) * s, reshaped to (.., N)
ONNX Runtime's `MatMulIntegerToFloat` (com.microsoft) sums the uint8 x uint8 products in int32 and
scales each column by its weight scale in the kernel, and packs its constant `B` once at load; the
per-position scale is one Mul after it. (The first version ran MatMulInteger with the stored
weight as `A`, Y^T = W^T X^T, which needs no transposed copy but two Transposes, two Casts and two
Muls per call and a weight the kernel cannot pre-pack: on nano's prefill the same results took
~1.5x as long - docs/quantization.md.)

The integer range (`int8_range`): the u8 x s8 kernels of x86 CPUs without VNNI (AVX2: vpmaddubsw)
add pairs of products into int16 and saturate when both operands span their full range. "reduced"
keeps what may saturate in 7 bits (per-token activations Q = 63, towers' weights 7-bit, as ONNX
Runtime's reduce_range) and is right on every CPU; "full" (Q = 127, 8-bit weights) is for CPUs with
VNNI / AMX (Intel Cascade Lake+, AMD Zen 4+) or Arm's dot-product instructions, where no pair
saturates. The engine records which (it runs on any CPU, but "full" is only exact on those). The
decoder's per-token GEMM multiplies uint8 by uint8 (other kernels than the u8 x s8 ones above);
whichever kernel ONNX Runtime picks, the runtime checks it is exact at the engine's range before
it uses the prefill graph (runtime/integer_gemm.py, `prefill.activation_levels`).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vinci_edge import stages as st
from vinci_edge.manifest import PrefillGraph
from vinci_edge.quantization import graph as g
from vinci_edge.quantization.handler import StageJob, StageResult
from vinci_edge.quantization.int8 import smoothed_model
from vinci_edge.quantization.modelopt_onnx import DECODER_LAYERS

PRECISION = "int8-compute"
PER_TENSOR, PER_TOKEN = "per-tensor", "per-token"
ACTIVATION_SCALES = (PER_TENSOR, PER_TOKEN)
REDUCED, FULL = "reduced", "full"
INT8_RANGES = (REDUCED, FULL)
LEVELS = {REDUCED: 63, FULL: 127}  # per-token activations: |q| <= Q
ZERO_POINT = 128  # of the uint8 activations and weights of the per-token integer GEMM
PREFILL_KERNEL = "MatMulIntegerToFloat"  # the integer GEMM of the prefill graph (runtime/integer_gemm.py)
BLOCK = 32  # MatMulNBits' block along K (every block of a row carries the row's scale)
PREFILL_MIN = 16  # appends of >= this many positions run the prefill graph (docs/quantization.md)
PREFILL_FILE = "decoder_prefill.onnx"
# Layer kinds whose prefill keeps the decode graph's block-wise kernel: per-position scales on the
# q/k/v projection and on the MLP's gate/up projection cost the trained task model up to 7 points
# together with the others; with these two block-wise it stays within 1 (docs/quantization.md).
PREFILL_BLOCKWISE = ("qkv", "gate_up")
DATA_THRESHOLD = 1024  # tensors above this many bytes go to the shared .data file


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


class Int8Compute:
    precision = PRECISION
    tool = "onnxruntime"

    def __init__(
        self,
        towers: str = PER_TENSOR,
        int8_range: str = REDUCED,
        prefill_min: int = PREFILL_MIN,
        prefill_blockwise: tuple[str, ...] = PREFILL_BLOCKWISE,
    ) -> None:
        if towers not in ACTIVATION_SCALES:
            raise ValueError(f"unknown tower activation scale {towers!r} (choose {ACTIVATION_SCALES})")
        if int8_range not in INT8_RANGES:
            raise ValueError(f"unknown int8 range {int8_range!r} (choose {INT8_RANGES})")
        if prefill_min < 2:
            raise ValueError("prefill_min must be at least 2 (one position is a decode step)")
        unknown = set(prefill_blockwise) - set(DECODER_LAYERS)
        if unknown:
            raise ValueError(
                f"unknown decoder layer kinds {sorted(unknown)} (choose from {list(DECODER_LAYERS)})"
            )
        self.towers, self.int8_range, self.prefill_min = towers, int8_range, prefill_min
        self.prefill_blockwise = tuple(k for k in DECODER_LAYERS if k in prefill_blockwise)

    def needs_calibration(self, job: StageJob) -> bool:
        return job.smoothquant is not None and job.stage == st.DECODER

    def check_available(self) -> None:
        return None

    def run(self, job: StageJob) -> StageResult:
        if job.stage == st.DECODER:
            return self._decoder(job)
        if self.towers == PER_TOKEN:
            return self._tower_per_token(job)
        return self._tower_per_tensor(job)

    # ---- towers --------------------------------------------------------------------------------------
    def _tower_per_tensor(self, job: StageJob) -> StageResult:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        model = g.load(job.src)
        g.name_nodes(model)
        job.workdir.mkdir(parents=True, exist_ok=True)
        src, out = job.workdir / "input.onnx", job.workdir / "output.onnx"
        g.save(model, src)
        n_linear = len(g.weight_matmuls(model))
        del model
        job.say(f"{job.stage}: int8 compute (DynamicQuantizeMatMul, per-tensor activations)")
        with g.quiet_tools():
            quantize_dynamic(
                str(src),
                str(out),
                op_types_to_quantize=["MatMul"],
                per_channel=True,
                reduce_range=self.int8_range == REDUCED,
                weight_type=QuantType.QInt8,
                use_external_data_format=True,
                extra_options={"MatMulConstBOnly": True, "DefaultTensorType": 1},
            )
        model = g.load(out)
        data = g.save(model, job.dst)
        bits = 7 if self.int8_range == REDUCED else 8
        details = {
            "layers": {
                "linear": {
                    "count": n_linear,
                    "kernel": "DynamicQuantizeMatMul (DynamicQuantizeLinear + MatMulInteger)",
                    "activations": "uint8, one scale per call (per-tensor), computed at run time",
                    "weights": f"int8 per output channel ({bits}-bit range)",
                },
                "other": "fp32 (convolutions, attention products, norms)",
            },
            "int8_range": self.int8_range,
            "ops": g.op_counts(model),
        }
        return StageResult(
            "int8 compute (DynamicQuantizeMatMul)", self.tool, _ort_version(), data, "all", details
        )

    def _tower_per_token(self, job: StageJob) -> StageResult:
        model = g.load(job.src)
        g.name_nodes(model)
        layers = g.weight_matmuls(model)
        job.say(f"{job.stage}: int8 compute (MatMulIntegerToFloat, per-token activations)")
        weights = quantize_weights(model, layers)
        for node in layers:
            per_token_matmul(model, node, weights[node.name], LEVELS[self.int8_range])
        g.drop_unused(model)
        data = g.save(model, job.dst)
        details = {
            "layers": {"linear": {"count": len(layers), **_per_token_record(self.int8_range)}},
            "int8_range": self.int8_range,
            "ops": g.op_counts(model),
        }
        return StageResult(
            "int8 compute (MatMulIntegerToFloat, per-token)", self.tool, _ort_version(), data, "all", details
        )

    # ---- decoder -------------------------------------------------------------------------------------
    def _decoder(self, job: StageJob) -> StageResult:
        # SmoothQuant (when asked) on the layers whose prefill runs per-token: the block-wise ones
        # and the head quantize their activations per block of 32 and are left as they are.
        kept = self.prefill_blockwise
        model, sq = smoothed_model(job, keep_head=True, skip=lambda name: layer_kind(name) in kept)
        head = g.output_head(model)
        if head is not None:
            model = g.matmul_nbits(model, 8, BLOCK, symmetric=True, nodes_to_include=[head.name])
        layers = g.weight_matmuls(model)
        bad = [n.name for n in layers if _k(model, n) % BLOCK]
        if bad:
            raise ValueError(f"int8-compute needs input widths divisible by {BLOCK}: {', '.join(bad[:3])}")
        blockwise = f", except {', '.join(self.prefill_blockwise)}" if self.prefill_blockwise else ""
        job.say(
            f"{job.stage}: int8 compute (decode: MatMulNBits 8-bit; "
            f"prefill: MatMulIntegerToFloat, per-token{blockwise})"
        )
        weights = quantize_weights(model, layers)
        kinds = {n.name: layer_kind(n.name) for n in layers}
        for node in layers:
            nbits_matmul(model, node, weights[node.name])
        g.drop_unused(model)
        data = save_external(model, job.dst)
        decode_ops = g.op_counts(model)
        del model

        # The prefill graph: the decode graph as saved (initializers pointing into its .data), with
        # every linear layer's MatMulNBits (but the block-wise kinds') turned into the per-token
        # integer GEMM on the same tensor.
        prefill = g.load(job.dst, weights=False)
        nodes = {n.name: n for n in prefill.graph.node}
        for name, w in weights.items():
            if kinds[name] not in self.prefill_blockwise:
                per_token_matmul(prefill, nodes[name], w, LEVELS[self.int8_range], weight_stored=True)
        g.drop_unused(prefill)
        onnx.save_model(prefill, str(job.dst.with_name(PREFILL_FILE)))
        job.say(f"{job.stage}: prefill graph {PREFILL_FILE} written (weights shared with {data})")

        per_kind: dict[str, dict] = {}
        per_token = _per_token_record(self.int8_range)
        for kind in sorted(set(kinds.values())):
            per_kind[kind] = {
                "count": sum(1 for k in kinds.values() if k == kind),
                "prefill": _NBITS_RECORD if kind in self.prefill_blockwise else per_token,
                "decode": _NBITS_RECORD,
            }
        if head is not None:
            per_kind["lm_head"] = {
                "count": 1,
                "kernel": f"MatMulNBits 8-bit, symmetric blocks of {BLOCK} (both graphs; one position)",
            }
        details = {
            "layers": per_kind,
            "int8_range": self.int8_range,
            "prefill_graph": PREFILL_FILE,
            "prefill_min_positions": self.prefill_min,
            "ops": decode_ops,
            "prefill_ops": g.op_counts(prefill),
        }
        if sq is not None:
            details["smoothquant"] = sq.to_dict()
        smoothed = f" + SmoothQuant alpha={job.smoothquant}" if sq is not None else ""
        result = StageResult(
            f"int8 compute (prefill MatMulIntegerToFloat per-token, decode MatMulNBits 8-bit){smoothed}",
            self.tool,
            _ort_version(),
            data,
            "all",
            details,
        )
        result.prefill = PrefillGraph(
            PREFILL_FILE,
            self.prefill_min,
            activation_levels=LEVELS[self.int8_range],
            integer_kernel=PREFILL_KERNEL,
        )
        return result


_NBITS_RECORD = {
    "kernel": "MatMulNBits 8-bit, accuracy_level 4",
    "activations": f"int8 per position and block of {BLOCK} (in the kernel)",
    "weights": "the same int8 tensor (per output channel)",
}


def _per_token_record(int8_range: str) -> dict[str, str]:
    return {
        "kernel": "MatMulIntegerToFloat (u8 activations x u8 weights, zero points 128), "
        "standard operators around it",
        "activations": f"int8, one scale per position (per-token), |q| <= {LEVELS[int8_range]}",
        "weights": "int8 per output channel, stored (N, K) uint8 + 128",
    }


def layer_kind(name: str) -> str:
    """The decoder layer kind of a linear layer (modelopt_onnx.DECODER_LAYERS), 'linear' otherwise."""
    return next((kind for kind, suffix in DECODER_LAYERS.items() if name.endswith(suffix)), "linear")


def _k(model: onnx.ModelProto, node: onnx.NodeProto) -> int:
    return int(g.initializer_map(model)[node.input[1]].dims[0])


class Weight:
    """One linear layer's int8 weight: `u8` (N, K) = round(W^T / scale) + 128, `scale` (N,). The graphs
    store it as `stored` (N, K / 32, 32), the shape MatMulNBits' specification gives its `B` (newer
    ONNX Runtimes refuse a 2-D one); the same bytes."""

    def __init__(self, name: str, w: np.ndarray) -> None:
        scale = np.abs(w).max(axis=0) / 127.0
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        q = np.clip(np.rint(w / scale), -127, 127).astype(np.int16)
        self.name = name
        self.u8 = np.ascontiguousarray((q + 128).astype(np.uint8).T)
        self.scale = scale
        self.k, self.n = w.shape

    @property
    def tensor(self) -> str:
        return f"{self.name}.w_u8"

    @property
    def stored(self) -> np.ndarray:
        return self.u8.reshape(self.n, self.k // BLOCK, BLOCK)


def quantize_weights(model: onnx.ModelProto, layers: list[onnx.NodeProto]) -> dict[str, Weight]:
    inits = g.initializer_map(model)
    return {n.name: Weight(n.name, numpy_helper.to_array(inits[n.input[1]])) for n in layers}


def nbits_matmul(model: onnx.ModelProto, node: onnx.NodeProto, w: Weight) -> None:
    """Replace `node` in place by MatMulNBits 8-bit on `w` (every block of a row with the row's scale)."""
    scales = np.repeat(w.scale[:, None], w.k // BLOCK, axis=1).reshape(-1)
    model.graph.initializer.extend(
        [numpy_helper.from_array(w.stored, w.tensor), numpy_helper.from_array(scales, f"{w.name}.w_scales")]
    )
    new = helper.make_node(
        "MatMulNBits",
        [node.input[0], w.tensor, f"{w.name}.w_scales"],
        [node.output[0]],
        name=node.name,
        domain="com.microsoft",
        K=w.k,
        N=w.n,
        bits=8,
        block_size=BLOCK,
        accuracy_level=g.NBITS_ACCURACY_LEVEL,
    )
    node.CopyFrom(new)
    _ensure_opset(model, "com.microsoft", 1)


def per_token_matmul(
    model: onnx.ModelProto, node: onnx.NodeProto, w: Weight, levels: int, weight_stored: bool = False
) -> None:
    """Replace `node` (a MatMul X @ W, or the MatMulNBits of `w`) by the per-token integer GEMM on
    `w.u8` (module docstring). `weight_stored`: the graph already holds `w.tensor` (the prefill graph
    shares the decode graph's); otherwise it is added."""
    if _opset(model) < 13:
        raise ValueError("the per-token integer GEMM needs opset 13 or later (per-axis QuantizeLinear)")
    p, x, y = w.name, node.input[0], node.output[0]
    inits = [
        numpy_helper.from_array(np.array([-1, w.k], np.int64), f"{p}.rows"),
        numpy_helper.from_array(np.array([w.n], np.int64), f"{p}.n"),
        *([numpy_helper.from_array(np.array([w.n, w.k], np.int64), f"{p}.nk")] if weight_stored else []),
        numpy_helper.from_array(np.array(1e-30 * levels, np.float32), f"{p}.tiny"),
        numpy_helper.from_array(np.array(levels, np.float32), f"{p}.levels"),
        numpy_helper.from_array(np.array([-1], np.int64), f"{p}.flat"),
        numpy_helper.from_array(np.array(ZERO_POINT, np.uint8), f"{p}.zp"),
        numpy_helper.from_array(np.array(1.0, np.float32), f"{p}.one"),
        numpy_helper.from_array(w.scale.copy(), f"{p}.w_scale"),
    ]
    if not weight_stored:
        inits.append(numpy_helper.from_array(w.u8, w.tensor))
    model.graph.initializer.extend(inits)
    # (N, K) -> (K, N): a Transpose of a constant, which ONNX Runtime folds when it loads the graph;
    # the decode graph's tensor (MatMulNBits' (N, K / 32, 32)) is first reshaped to (N, K), folded too
    weight, source = [], w.tensor
    if weight_stored:
        weight.append(helper.make_node("Reshape", [w.tensor, f"{p}.nk"], [f"{p}.w2"], name=f"{p}.w2"))
        source = f"{p}.w2"
    weight.append(helper.make_node("Transpose", [source], [f"{p}.wt"], perm=[1, 0], name=f"{p}.wt"))
    new = [
        helper.make_node("Reshape", [x, f"{p}.rows"], [f"{p}.x2"], name=f"{p}.x2"),
        helper.make_node("Abs", [f"{p}.x2"], [f"{p}.abs"], name=f"{p}.abs"),
        _reduce_max(model, f"{p}.abs", f"{p}.amax", p),
        helper.make_node("Max", [f"{p}.amax", f"{p}.tiny"], [f"{p}.amax1"], name=f"{p}.amax1"),
        helper.make_node("Div", [f"{p}.amax1", f"{p}.levels"], [f"{p}.xs"], name=f"{p}.xs"),
        # uint8 = round(x / s) + 128, one scale and zero point per row: QuantizeLinear along axis 0
        helper.make_node("Reshape", [f"{p}.xs", f"{p}.flat"], [f"{p}.xsf"], name=f"{p}.xsf"),
        helper.make_node("Shape", [f"{p}.xsf"], [f"{p}.m"], name=f"{p}.m"),
        helper.make_node(
            "ConstantOfShape",
            [f"{p}.m"],
            [f"{p}.xzp"],
            value=helper.make_tensor(f"{p}.zp_value", TensorProto.UINT8, [1], [ZERO_POINT]),
            name=f"{p}.xzp",
        ),
        helper.make_node(
            "QuantizeLinear", [f"{p}.x2", f"{p}.xsf", f"{p}.xzp"], [f"{p}.xq"], axis=0, name=f"{p}.xq"
        ),
        *weight,
        helper.make_node(
            "MatMulIntegerToFloat",
            [f"{p}.xq", f"{p}.wt", f"{p}.one", f"{p}.w_scale", f"{p}.zp", f"{p}.zp"],
            [f"{p}.yw"],
            name=f"{p}.mmf",
            domain="com.microsoft",
        ),
        helper.make_node("Mul", [f"{p}.yw", f"{p}.xs"], [f"{p}.y2"], name=f"{p}.y2"),
        helper.make_node("Shape", [x], [f"{p}.lead"], end=-1, name=f"{p}.lead"),
        helper.make_node("Concat", [f"{p}.lead", f"{p}.n"], [f"{p}.shape"], axis=0, name=f"{p}.shape"),
        helper.make_node("Reshape", [f"{p}.y2", f"{p}.shape"], [y], name=p),
    ]
    _splice(model, node, new)
    _ensure_opset(model, "com.microsoft", 1)


def _reduce_max(model: onnx.ModelProto, x: str, y: str, p: str) -> onnx.NodeProto:
    """ReduceMax over the last axis of a 2-D tensor, keeping it: axes an attribute before opset 18."""
    if _opset(model) >= 18:
        model.graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), f"{p}.axis"))
        return helper.make_node("ReduceMax", [x, f"{p}.axis"], [y], keepdims=1, name=y)
    return helper.make_node("ReduceMax", [x], [y], axes=[1], keepdims=1, name=y)


def _splice(model: onnx.ModelProto, node: onnx.NodeProto, new: list[onnx.NodeProto]) -> None:
    nodes = list(model.graph.node)
    i = next(k for k, n in enumerate(nodes) if n.name == node.name)
    del model.graph.node[:]
    model.graph.node.extend(nodes[:i] + new + nodes[i + 1 :])


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _ensure_opset(model: onnx.ModelProto, domain: str, version: int) -> None:
    if not any(o.domain == domain for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(domain, version))


def save_external(model: onnx.ModelProto, path) -> str:
    """Write `path` + `path.data` with every tensor above DATA_THRESHOLD bytes in the .data file,
    whatever the model's size (g.save keeps small models in one file): the prefill graph refers to
    those byte ranges. Returns the data file's name."""
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)
    external = onnx.ModelProto()
    external.CopyFrom(model)
    onnx.save_model(
        external,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data.name,
        size_threshold=DATA_THRESHOLD,
    )
    data.chmod(0o644)
    return data.name
