"""TensorRT behind the stage interface: plans from `vinci-edge build-engines`, one CUDA stream, inputs,
KV cache and the stitch output resident on the device, CUDA graphs for decode steps.

    TrtStages(engine, text_table, plans_dir)[VISION].run({"pixel_values": x})    # StageRunner
    dec = TrtStages(...)[DECODER]; dec.prefill(embeds); dec.step(token)           # the decode loop's

- `TrtStage` (vision / image_projector / audio): device buffers for every input and output at the
  plan's profile max, allocated once; numpy inputs are copied in, device arrays (DLPack or the CUDA
  array interface, `runtime/dlpack.py`) are bound where they are; outputs come back as numpy (the
  StageRunner contract, and what the encoded-chunk cache keeps). Inputs longer than the profile's max
  along axis 0 run in slices of it (`max_batch`).
- `TrtDecoder`: the portable decoder graph (docs/portable-decoder.md) with two execution contexts
  (profiles `prefill` and `decode`), the KV cache in two max-context buffers per layer tensor bound
  ping-pong (`runtime/kv_cache.py` argues why), the embeddings in one device buffer the stitch kernel
  writes straight into (`DeviceStitch`), and decode steps replayed as CUDA graphs once their binding
  repeats (`GraphCache`). Only the last position's logits come back to the host, into pinned memory.

The bookkeeping (profiles, keys, bindings, graph keys) lives in pure modules tested on the CPU; this
file only calls TensorRT and cuda-python. tests/gpu/test_tensorrt_backend.py runs it on a GPU.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vinci_edge import stages as st
from vinci_edge.errors import EngineError, MissingDependencyError, PromptError
from vinci_edge.runtime import profiles
from vinci_edge.runtime.backends import TENSORRT_INSTALL
from vinci_edge.runtime.device import Cuda, DeviceBuffer, PinnedBuffer, Stream
from vinci_edge.runtime.dlpack import DeviceView, device_view, exports_device_memory
from vinci_edge.runtime.engine import Engine
from vinci_edge.runtime.engine_key import DeviceInfo, find_plan, onnx_hash, rebuild_command
from vinci_edge.runtime.kv_cache import GraphCache, PingPongKV

log = logging.getLogger(__name__)

PLANS = "tensorrt"  # default plan folder inside an engine folder
PROVIDER = "TensorRT"
DECODE_GRAPHS = 512  # captured decode-step graphs kept (LRU)


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise MissingDependencyError(f"TensorRT is not installed ({exc})", hint=TENSORRT_INSTALL) from exc
    return trt


class TrtLogger:
    """One TensorRT logger per process (TensorRT wants a single one)."""

    instance = None

    @classmethod
    def get(cls, trt):
        if cls.instance is None:
            cls.instance = trt.Logger(trt.Logger.WARNING)
        return cls.instance


def stage_graph_files(engine: Engine, stage: str) -> list[Path]:
    """The ONNX file (and its external data) a stage's plan is built from: the portable decoder
    graph for the decoder."""
    entry = engine.stages[stage]
    if stage == st.DECODER:
        entry = profiles.portable_decoder(engine.manifest)
        if entry is None:
            raise EngineError(profiles.NO_PORTABLE_DECODER, hint="re-export the engine, then build-engines")
    files = [engine.folder / entry.file]
    if entry.external_data:
        files.append(engine.folder / entry.external_data)
    return files


class _Plan:
    """A deserialized plan: engine, its I/O tensors (name, input?, numpy dtype)."""

    def __init__(self, trt, path: Path) -> None:
        runtime = trt.Runtime(TrtLogger.get(trt))
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise EngineError(
                f"TensorRT could not load {path.name} (see its log above)",
                hint="rebuild the engines here: `vinci-edge build-engines --engine DIR`",
            )
        self.runtime = runtime  # the engine must not outlive its runtime
        self.io: dict[str, tuple[bool, np.dtype]] = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            self.io[name] = (is_input, np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))))

    def max_shape(self, name: str, profile: int = 0) -> tuple[int, ...]:
        return tuple(self.engine.get_tensor_profile_shape(name, profile)[2])


class TrtStage:
    """One media stage plan (see the module docstring)."""

    def __init__(self, name: str, plan_path: Path, cuda: Cuda, stream: Stream, trt=None) -> None:
        trt = trt or import_tensorrt()
        self.name, self.provider = name, PROVIDER
        self.cuda, self.stream = cuda, stream
        self.plan = _Plan(trt, plan_path)
        self.context = self.plan.engine.create_execution_context()
        inputs = [n for n, (is_in, _) in self.plan.io.items() if is_in]
        self.input_names = inputs
        self.output_names = [n for n, (is_in, _) in self.plan.io.items() if not is_in]
        self.max_batch = min(self.plan.max_shape(n)[0] for n in inputs)
        self.buffers: dict[str, DeviceBuffer] = {}
        for n in inputs:
            self.buffers[n] = DeviceBuffer(cuda, _nbytes(self.plan.max_shape(n), self.plan.io[n][1]))
        self._outputs_sized = False

    def _size_outputs(self) -> None:
        """Output buffers at the largest shape the max inputs give (known once shapes are set)."""
        for n in self.input_names:
            self.context.set_input_shape(n, self.plan.max_shape(n))
        for n in self.output_names:
            shape = tuple(self.context.get_tensor_shape(n))
            self.buffers[n] = DeviceBuffer(self.cuda, _nbytes(shape, self.plan.io[n][1]))
        self._outputs_sized = True

    def run(self, inputs: Mapping[str, Any], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        if not self._outputs_sized:
            self._size_outputs()
        names = outputs or self.output_names
        n = _rows(next(iter(inputs.values())))
        parts: dict[str, list[np.ndarray]] = {k: [] for k in names}
        for start in range(0, n, self.max_batch):
            sliced = {k: _slice(v, start, start + self.max_batch) for k, v in inputs.items()}
            for k, v in self._run_once(sliced, names).items():
                parts[k].append(v)
        return {k: np.concatenate(v) if len(v) > 1 else v[0] for k, v in parts.items()}

    def _run_once(self, inputs: Mapping[str, Any], names: list[str]) -> dict[str, np.ndarray]:
        keep = []  # host arrays and device views in flight until the stream passes them
        for k, v in inputs.items():
            dtype = self.plan.io[k][1]
            if exports_device_memory(v) and not isinstance(v, np.ndarray):
                view = device_view(v)
                if not view.on_gpu or view.dtype != dtype:
                    raise EngineError(
                        f"stage '{self.name}' input {k}: a {view.dtype} array on device type "
                        f"{view.device_type} cannot be bound (the plan takes {dtype} on the GPU)",
                        hint="pass a numpy array, or a contiguous CUDA array of the plan's dtype",
                    )
                self.context.set_input_shape(k, view.shape)
                self.context.set_tensor_address(k, view.ptr)
                keep.append(view)
            else:
                host = np.ascontiguousarray(v, dtype=dtype)
                self.context.set_input_shape(k, host.shape)
                self.stream.h2d(self.buffers[k].ptr, host)
                self.context.set_tensor_address(k, self.buffers[k].ptr)
                keep.append(host)
        out = {}
        for k in self.output_names:
            self.context.set_tensor_address(k, self.buffers[k].ptr)
        if not self.context.execute_async_v3(int(self.stream)):
            raise EngineError(f"TensorRT failed to run stage '{self.name}' (see its log above)")
        for k in names:
            shape = tuple(self.context.get_tensor_shape(k))
            out[k] = np.empty(shape, self.plan.io[k][1])
            self.stream.d2h(out[k], self.buffers[k].ptr)
        self.stream.synchronize()
        for view in keep:
            if isinstance(view, DeviceView):
                view.release()
        return out


class TrtDecoder:
    """The portable decoder plan with its device-resident KV cache (see the module docstring)."""

    name = st.DECODER
    provider = PROVIDER

    def __init__(
        self,
        plan_path: Path,
        spec,
        cuda: Cuda,
        stream: Stream,
        context: int | None = None,
        embed_table: np.ndarray | None = None,
        graphs: int = DECODE_GRAPHS,
        trt=None,
    ) -> None:
        trt = trt or import_tensorrt()
        self.spec, self.cuda, self.stream, self.embed_table = spec, cuda, stream, embed_table
        self.plan = _Plan(trt, plan_path)
        self.dtype = self.plan.io["inputs_embeds"][1].type
        self.context = spec.max_context if context is None else min(context, spec.max_context)
        # build-engines adds the profiles in this order (runtime/profiles.py default_axes)
        count = self.plan.engine.num_optimization_profiles
        self.contexts = {}
        for index, label in enumerate((profiles.PREFILL, profiles.DECODE)[:count]):
            ctx = self.plan.engine.create_execution_context()
            ctx.set_optimization_profile_async(index, int(stream))
            self.contexts[label] = ctx
        item = np.dtype(self.dtype).itemsize
        self.kv = PingPongKV(spec.num_layers, spec.kv_heads, spec.head_dim, self.context)
        self.kv_buffers = {
            (layer, kind, side): DeviceBuffer(cuda, self.kv.elements * item)
            for layer in range(spec.num_layers)
            for kind in ("key", "value")
            for side in (0, 1)
        }
        self.embeds = DeviceBuffer(cuda, self.context * spec.hidden_size * item)
        self.step_row = PinnedBuffer(cuda, (1, spec.hidden_size), self.dtype)
        logits_dtype = self.plan.io["logits"][1]
        self.d_logits = DeviceBuffer(cuda, spec.vocab_size * logits_dtype.itemsize)
        self.logits = PinnedBuffer(cuda, (spec.vocab_size,), logits_dtype)
        self.graphs = GraphCache(graphs, self._capture_step, stream.release_graph)
        self._step_key: tuple | None = None

    @property
    def length(self) -> int:
        return self.kv.length

    @property
    def free(self) -> int:
        return self.kv.free

    # ---- one call -----------------------------------------------------------------------------------
    def _bind(self, s: int) -> Any:
        """Shapes and addresses of a call adding s positions (embeddings already in self.embeds)."""
        label = profiles.DECODE if s == 1 and profiles.DECODE in self.contexts else profiles.PREFILL
        ctx = self.contexts[label]
        ctx.set_input_shape("inputs_embeds", (1, s, self.spec.hidden_size))
        ctx.set_tensor_address("inputs_embeds", self.embeds.ptr)
        for b in self.kv.plan(s):
            ctx.set_input_shape(b.past_name, b.past_shape)
            ctx.set_tensor_address(b.past_name, self.kv_buffers[(b.layer, b.kind, b.past_side)].ptr)
            ctx.set_tensor_address(b.present_name, self.kv_buffers[(b.layer, b.kind, b.present_side)].ptr)
        ctx.set_tensor_address("logits", self.d_logits.ptr)
        return ctx

    def _enqueue(self, ctx: Any) -> None:
        if not ctx.execute_async_v3(int(self.stream)):
            raise EngineError("TensorRT failed to run the decoder (see its log above)")

    def _check_fits(self, n: int) -> None:
        if self.length + n > self.context:
            raise PromptError(
                f"{self.length + n} positions do not fit the decoder context of {self.context}",
                hint="use fewer frames (--num-frames), a shorter clip or question, or export with a larger "
                "--max-context",
            )

    def append(self, embeds: Any) -> np.ndarray:
        """Add (S, D) positions (numpy, or a device array / `DeviceStitch` output already in
        `self.embeds`); the last position's logits."""
        n = _rows(embeds)
        if n == 0:
            raise ValueError("append needs at least one position")
        self._check_fits(n)
        keep = None
        if isinstance(embeds, DeviceView) and embeds.ptr == self.embeds.ptr:
            pass  # the stitch wrote it in place
        elif exports_device_memory(embeds) and not isinstance(embeds, np.ndarray):
            keep = device_view(embeds)
            self.stream.d2d(self.embeds.ptr, keep.ptr, keep.nbytes)
        else:
            keep = np.ascontiguousarray(embeds, dtype=self.dtype)
            self.stream.h2d(self.embeds.ptr, keep)
        self._enqueue(self._bind(n))
        self._finish(n)
        return self.logits.array.astype(np.float32, copy=True)

    def _finish(self, n: int) -> None:
        self.stream.d2h(self.logits.array, self.d_logits.ptr)
        self.stream.synchronize()
        self.kv.commit(n)

    def prefill(self, embeds: Any) -> np.ndarray:
        self.reset()
        return self.append(embeds)

    def step(self, token: int) -> np.ndarray:
        """One token: its embedding row through pinned memory, the step replayed as a CUDA graph when
        this binding (past length, ping-pong side) was seen before."""
        if self.embed_table is None:
            raise ValueError("this decoder was made without the embedding table `step` needs")
        self._check_fits(1)
        self.step_row.array[0] = self.embed_table[token]
        key = (self.kv.length, self.kv.side)
        ctx = self._bind(1)
        self._step_ctx = ctx
        self.graphs.run(key, lambda: self._step_work(ctx), self.stream.launch)
        self.stream.synchronize()
        self.kv.commit(1)
        return self.logits.array.astype(np.float32, copy=True)

    def _step_work(self, ctx: Any) -> None:
        """What one decode step enqueues: row in, the plan, logits out (all from / to pinned memory)."""
        nbytes = self.step_row.array.nbytes
        kind = self.cuda.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.cuda.call(
            "cudaMemcpyAsync", self.embeds.ptr, self.step_row.ptr, nbytes, kind, self.stream.handle
        )
        self._enqueue(ctx)
        self.stream.d2h(self.logits.array, self.d_logits.ptr)

    def _capture_step(self) -> Any:
        ctx = self._step_ctx
        self._step_work(ctx)  # TensorRT asks for one enqueue after a shape change before capturing
        self.stream.synchronize()
        return self.stream.capture(lambda: self._step_work(ctx))

    def rewind(self, length: int) -> None:
        item = np.dtype(self.dtype).itemsize
        copies = self.kv.rewind(length)
        for layer in range(self.spec.num_layers):
            for kind in ("key", "value"):
                for c in copies:
                    src = self.kv_buffers[(layer, kind, c.src_side)].ptr + c.src * item
                    dst = self.kv_buffers[(layer, kind, c.dst_side)].ptr + c.dst * item
                    self.stream.d2d(dst, src, c.count * item)
        self.stream.synchronize()

    def reset(self) -> None:
        self.kv.reset()


class DeviceStitch:
    """The CUDA stitch kernel on the decoder's stream, writing `inputs_embeds` straight into the
    decoder's device buffer: the (S, D) output never visits the host. The used text rows, bank rows
    and plan columns are uploaded (compacted on the host, as `CudaStitch` does); the banks make that
    one trip because the encoded-chunk cache (request/encode.py) holds numpy rows."""

    name = "cuda-device"

    def __init__(self, decoder: TrtDecoder, lib) -> None:
        self.decoder, self.lib = decoder, lib

    def __call__(self, x, out_dtype=None) -> DeviceView:
        from vinci_edge.kinds import Kind
        from vinci_edge.stitch.cuda import DevicePlan, DeviceSource, stitch_cuda
        from vinci_edge.stitch.cuda_host import compact_inputs

        dec, stream = self.decoder, self.decoder.stream
        y = compact_inputs(x)
        n, dim = len(y.plan), x.text_table.shape[1]
        if n > dec.context:  # the buffer's size; append checks the cache (after a prefill's reset)
            raise PromptError(f"{n} positions do not fit the decoder context of {dec.context}")
        scratch, keep = [], []

        def upload(a: np.ndarray) -> int:
            a = np.ascontiguousarray(a)
            buf = DeviceBuffer(dec.cuda, a.nbytes)
            stream.h2d(buf.ptr, a)
            scratch.append(buf)
            keep.append(a)
            return buf.ptr

        used = {**({Kind.TEXT: y.text_table} if y.text_table.shape[0] else {}), **y.banks}
        sources = {}
        for k, rows in used.items():
            t = y.tables.get(k)
            fa = np.asarray(t.freqs_a, np.float64) if t is not None else np.zeros(0)
            fb = np.asarray(t.freqs_b, np.float64) if t is not None else np.zeros(0)
            sources[k] = DeviceSource(
                upload(rows), rows.shape[0], rows.dtype,
                freqs_a=upload(fa) if fa.size else 0, len_a=fa.size,
                freqs_b=upload(fb) if fb.size else 0, len_b=fb.size,
            )  # fmt: skip
        p = y.plan
        plan = DevicePlan(*(upload(c) for c in (p.kind, p.src, p.scale, p.a, p.b)), n)
        stitch_cuda(sources, plan, dim, dec.embeds.ptr, dec.dtype, stream=int(stream), lib=self.lib)
        stream.synchronize()  # then the scratch buffers may go
        return DeviceView(dec.embeds.ptr, (n, dim), np.dtype(dec.dtype), 2, 0)


class TrtStages:
    """`Stages` over the plans in `plans_dir` (default ENGINE/tensorrt), each loaded on first use,
    after its key is checked against this device (`engine_key.find_plan`)."""

    def __init__(
        self,
        engine: Engine,
        text_table: np.ndarray,
        device: DeviceInfo,
        plans_dir: Path | None = None,
        context: int | None = None,
    ) -> None:
        self.trt = import_tensorrt()
        self.engine, self.text_table, self.device = engine, text_table, device
        self.plans_dir = plans_dir or engine.folder / PLANS
        self.context = context
        self.cuda = Cuda()
        self.stream = Stream(self.cuda)
        self.runners: dict[str, Any] = {}

    def plan_path(self, name: str) -> Path:
        digest = onnx_hash(stage_graph_files(self.engine, name), self.plans_dir)
        rebuild = rebuild_command(self.engine.folder)
        return find_plan(self.plans_dir, name, self.device, digest, rebuild)[0]

    def __getitem__(self, name: str) -> Any:
        if name not in self.runners:
            path = self.plan_path(name)
            if name == st.DECODER:
                self.runners[name] = TrtDecoder(
                    path, self.engine.manifest.decoder, self.cuda, self.stream, self.context,
                    self.text_table, trt=self.trt,
                )  # fmt: skip
            else:
                self.runners[name] = TrtStage(name, path, self.cuda, self.stream, trt=self.trt)
        return self.runners[name]

    def device_stitch(self, lib) -> DeviceStitch:
        return DeviceStitch(self[st.DECODER], lib)


def _nbytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def _rows(x: Any) -> int:
    return int(x.shape[0])


def _slice(x: Any, a: int, b: int) -> Any:
    if isinstance(x, np.ndarray):
        return x[a:b]
    if a == 0 and _rows(x) <= b:
        return x
    return x[a:b]  # CuPy / torch slices along axis 0 stay contiguous
