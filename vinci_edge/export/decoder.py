"""Decoder exporter: the LLM (Qwen2 / Llama family) as one ONNX graph for prefill and decode.

    inputs_embeds (1, S, D), seqlens_k (1,) int32 = total_len - 1, total_sequence_length () int32,
    past_key_i / past_value_i (1, kv_heads, max_context, head_dim) for each layer i
    -> logits (1, 1, vocab) of the LAST position only, present_key_i / present_value_i

One graph serves both phases: a prefill is a call with S prompt positions, a decode step a call with
S = 1; the KV cache is one preallocated buffer per layer that ONNX Runtime's GroupQueryAttention
writes in place (the runtime binds the same buffer as past and present), so nothing is copied per
token and one set of weights is loaded once. Prefill and decode graphs would only differ in S, which
ONNX Runtime handles dynamically at no cost here.

The graph is built directly from the checkpoint's tensors (read lazily from llm/*.safetensors, so
exporting needs about one tensor of extra memory) with ONNX Runtime's fused operators: RMSNorm with
the residual add (SkipSimplifiedLayerNormalization), packed QKV and gate/up matmuls, and
GroupQueryAttention with rotary embedding, reading the packed QKV itself. About 12 nodes per layer:
small models are bound by per-node overhead at decode, not by arithmetic.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from onnx import TensorProto, helper

from vinci_edge.config import OmniVinciConfig
from vinci_edge.errors import CheckpointError, ConfigError
from vinci_edge.export.onnx_writer import WeightFile, save_graph
from vinci_edge.manifest import DecoderSpec
from vinci_edge.progress import Progress, silent

SUPPORTED_LLMS = ("qwen2", "llama", "mistral")
OPSETS = {"": 17, "com.microsoft": 1}


class TensorSource:
    """Lazy access to the LLM tensors of a checkpoint's llm/ folder (safetensors, any dtype)."""

    def __init__(self, llm_dir: Path) -> None:
        from safetensors import safe_open

        from vinci_edge.model.checkpoint import weight_files

        self._handles = [safe_open(str(f), framework="pt") for f in weight_files(llm_dir)]
        self._where = {k: h for h in self._handles for k in h.keys()}  # noqa: SIM118

    def has(self, name: str) -> bool:
        return name in self._where

    def get(self, name: str) -> np.ndarray:
        if name not in self._where:
            raise CheckpointError(f"llm/ has no tensor {name!r}", hint="the LLM weights are incomplete")
        return self._where[name].get_tensor(name).float().numpy()


def rope_tables(llm: dict[str, Any], head_dim: int, max_context: int) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin caches (max_context, head_dim/2) exactly as transformers computes inverse
    frequencies (including its rope_scaling types), with its attention scaling folded in."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from vinci_edge.model.omnivinci import llm_config

    hf = llm_config(llm)
    scaling = getattr(hf, "rope_scaling", None) or {}
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type in ("dynamic", "longrope"):
        raise ConfigError(
            f"rope_scaling type {rope_type!r} depends on the sequence length; not supported by the "
            "static decoder graph"
        )
    inv_freq, attention_scaling = ROPE_INIT_FUNCTIONS[rope_type](hf, "cpu")
    inv = inv_freq.double().numpy()
    if inv.size != head_dim // 2:
        raise ConfigError(f"rotary covers {2 * inv.size} of {head_dim} head channels; not supported")
    angles = np.arange(max_context, dtype=np.float64)[:, None] * inv[None]
    return np.cos(angles) * attention_scaling, np.sin(angles) * attention_scaling


def _check_supported(llm: dict[str, Any]) -> None:
    mtype = llm.get("model_type", "qwen2")
    if mtype not in SUPPORTED_LLMS:
        raise ConfigError(
            f"LLM type {mtype!r} is not supported by the decoder exporter",
            hint=f"supported: {', '.join(SUPPORTED_LLMS)} (Llama-family decoders)",
        )
    if llm.get("use_sliding_window"):
        raise ConfigError("sliding-window attention is not supported by the decoder exporter")
    act = llm.get("hidden_act", "silu")
    if act != "silu":
        raise ConfigError(f"MLP activation {act!r} is not supported (expected silu)")


def export_decoder(
    cfg: OmniVinciConfig,
    llm_dir: Path,
    out_path: Path,
    max_context: int,
    dtype: str = "float32",
    progress: Progress | None = None,
    props: Mapping[str, str] | None = None,
) -> DecoderSpec:
    """Write `out_path` (+ `.data`) and return the spec the manifest records. `props`: the graph's
    provenance (vinci_edge.manifest.stage_props), written to its metadata_props."""
    llm = cfg.llm
    _check_supported(llm)
    say = progress or silent
    np_dtype = np.float16 if dtype == "float16" else np.float32
    onnx_dtype = TensorProto.FLOAT16 if dtype == "float16" else TensorProto.FLOAT
    d = int(llm["hidden_size"])
    n_layers = int(llm["num_hidden_layers"])
    n_heads = int(llm["num_attention_heads"])
    kv_heads = int(llm.get("num_key_value_heads") or n_heads)
    head_dim = int(llm.get("head_dim") or d // n_heads)
    vocab = int(llm["vocab_size"])
    eps = float(llm.get("rms_norm_eps", 1e-6))
    max_context = min(max_context, int(llm.get("max_position_embeddings", max_context)))
    spec = DecoderSpec(n_layers, n_heads, kv_heads, head_dim, d, vocab, max_context, dtype)

    src = TensorSource(llm_dir)
    w = WeightFile(out_path)
    nodes: list = []

    def weight(name: str, array: np.ndarray) -> str:
        return w.add(name, array.astype(np_dtype))

    def skip_norm(x: str, residual: str, w_name: str, out: str, res_out: str, name: str):
        """RMSNorm(x + residual); also returns the sum, the next residual."""
        return helper.make_node(
            "SkipSimplifiedLayerNormalization",
            [x, residual, w_name],
            [out, "", "", res_out],
            domain="com.microsoft",
            epsilon=eps,
            name=name,
        )

    def linear_t(*names: str) -> np.ndarray:
        """HF Linear weights are (out, in); MatMul wants (in, out); several are packed along out."""
        return np.concatenate([src.get(n) for n in names], axis=0).T

    cos, sin = rope_tables(llm, head_dim, max_context)
    weight("rope_cos", cos)
    weight("rope_sin", sin)

    hidden = "inputs_embeds"
    residual = None
    mlp_out = None
    for i in range(n_layers):
        if i % max(1, n_layers // 10) == 0:
            say(f"decoder layer {i + 1}/{n_layers}")
        p = f"model.layers.{i}."
        ln_in = weight(f"l{i}.ln_in", src.get(p + "input_layernorm.weight"))
        if residual is None:
            x, residual = f"l{i}.x", hidden
            nodes.append(
                helper.make_node(
                    "SimplifiedLayerNormalization",
                    [hidden, ln_in],
                    [x],
                    axis=-1,
                    epsilon=eps,
                    name=f"l{i}.norm_in",
                )
            )
        else:
            x, new_res = f"l{i}.x", f"l{i}.res_in"
            nodes.append(skip_norm(mlp_out, residual, ln_in, x, new_res, f"l{i}.norm_in"))
            residual = new_res

        a = p + "self_attn."
        qkv_w = weight(f"l{i}.qkv", linear_t(a + "q_proj.weight", a + "k_proj.weight", a + "v_proj.weight"))
        qkv = f"l{i}.qkv_out"
        nodes.append(helper.make_node("MatMul", [x, qkv_w], [qkv], name=f"l{i}.qkv"))
        if src.has(a + "q_proj.bias"):
            bias = np.concatenate([src.get(a + f"{n}_proj.bias") for n in "qkv"])
            nodes.append(helper.make_node("Add", [qkv, weight(f"l{i}.qkv_b", bias)], [qkv + "_b"]))
            qkv += "_b"
        # GroupQueryAttention reads the packed q|k|v projection itself (key and value left empty): a
        # Split before it cost 4-9 % of an int4 decode step, 3 % of an fp32 one (A/B, SmolLM2).
        attn = f"l{i}.attn"
        nodes.append(
            helper.make_node(
                "GroupQueryAttention",
                [
                    qkv,
                    "",
                    "",
                    f"past_key_{i}",
                    f"past_value_{i}",
                    "seqlens_k",
                    "total_sequence_length",
                    "rope_cos",
                    "rope_sin",
                ],
                [attn, f"present_key_{i}", f"present_value_{i}"],
                domain="com.microsoft",
                num_heads=n_heads,
                kv_num_heads=kv_heads,
                do_rotary=1,
                rotary_interleaved=0,
                name=f"l{i}.gqa",
            )
        )
        o = f"l{i}.o"
        nodes.append(
            helper.make_node("MatMul", [attn, weight(f"l{i}.o_w", linear_t(a + "o_proj.weight"))], [o])
        )

        ln_post = weight(f"l{i}.ln_post", src.get(p + "post_attention_layernorm.weight"))
        x2, res2 = f"l{i}.x2", f"l{i}.res_mid"
        nodes.append(skip_norm(o, residual, ln_post, x2, res2, f"l{i}.norm_post"))
        residual = res2

        m = p + "mlp."
        gu = f"l{i}.gu"
        inter = src.get(m + "gate_proj.weight").shape[0]
        nodes.append(
            helper.make_node(
                "MatMul",
                [x2, weight(f"l{i}.gu_w", linear_t(m + "gate_proj.weight", m + "up_proj.weight"))],
                [gu],
            )
        )
        gate, up = f"l{i}.gate", f"l{i}.up"
        gu_split = w.add(f"l{i}.gu_split", np.array([inter, inter], np.int64))
        nodes.append(helper.make_node("Split", [gu, gu_split], [gate, up], axis=-1))
        nodes.append(helper.make_node("Sigmoid", [gate], [f"l{i}.sig"]))
        nodes.append(helper.make_node("Mul", [gate, f"l{i}.sig"], [f"l{i}.silu"]))
        nodes.append(helper.make_node("Mul", [f"l{i}.silu", up], [f"l{i}.act"]))
        mlp_out = f"l{i}.mlp_out"
        nodes.append(
            helper.make_node(
                "MatMul", [f"l{i}.act", weight(f"l{i}.down_w", linear_t(m + "down_proj.weight"))], [mlp_out]
            )
        )

    # Only the last position goes through the final norm and the vocabulary projection.
    say("final norm and output head")
    starts = w.add("last_start", np.array([-1], np.int64))
    ends = w.add("last_end", np.array([np.iinfo(np.int64).max], np.int64))
    axes = w.add("last_axis", np.array([1], np.int64))
    nodes.append(helper.make_node("Slice", [mlp_out, starts, ends, axes], ["last_mlp"]))
    nodes.append(helper.make_node("Slice", [residual, starts, ends, axes], ["last_res"]))
    nodes.append(
        skip_norm(
            "last_mlp",
            "last_res",
            weight("final_norm", src.get("model.norm.weight")),
            "final",
            "",
            "final_norm",
        )
    )
    head = "lm_head.weight" if src.has("lm_head.weight") else "model.embed_tokens.weight"
    nodes.append(helper.make_node("MatMul", ["final", weight("lm_head", src.get(head).T)], ["logits"]))

    f = onnx_dtype
    inputs = [
        helper.make_tensor_value_info("inputs_embeds", f, [1, "sequence", d]),
        helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [1]),
        helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, []),
    ]
    outputs = [helper.make_tensor_value_info("logits", f, [1, 1, vocab])]
    for i in range(n_layers):
        for kind in ("key", "value"):
            inputs.append(
                helper.make_tensor_value_info(f"past_{kind}_{i}", f, [1, kv_heads, "max_context", head_dim])
            )
            outputs.append(
                helper.make_tensor_value_info(
                    f"present_{kind}_{i}", f, [1, kv_heads, "max_context", head_dim]
                )
            )
    w.close()
    graph = helper.make_graph(nodes, "vinci_edge_decoder", inputs, outputs, w.initializers)
    save_graph(graph, out_path, OPSETS, props=props)
    return spec
