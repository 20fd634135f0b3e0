"""Which TensorRT engine fits which device: the key an engine is stored under, and the check at load.

A TensorRT engine (a serialized plan) runs only on the GPU model and the TensorRT version that built
it, and only computes what its ONNX graph said when it was built. So `vinci-edge build-engines` stores
each stage's plan under a key of

    GPU name + compute capability + TensorRT version + ONNX file hash (+ the build settings)

and writes the key beside the plan (`<stage>.json`). At load the runtime computes the key of the
device it runs on and refuses a plan whose key differs, with one message that says what it was built
for, what this is, and the command that rebuilds it (`EngineError`: exit status 2 at the CLI). A plan
loaded anyway would fail inside `deserialize_cuda_engine` with a serialization error, or worse, load
and compute the graph of an earlier export.

Pure Python: nothing here imports TensorRT or CUDA (the device is described by `DeviceInfo`, filled
by `runtime/device_probe.py` on a real machine and by hand in the tests).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vinci_edge.errors import EngineError

KEY_FORMAT = "vinci-edge-trt-engine"
KEY_VERSION = 1
HASH_CACHE = "onnx-hashes.json"  # beside the plans: file hashes by (path, size, mtime), see onnx_hash


@dataclass(frozen=True)
class DeviceInfo:
    """The GPU an engine is built for or loaded on, and the TensorRT doing it."""

    gpu: str  # cudaDeviceProp.name, e.g. "NVIDIA H100 80GB HBM3", "Orin"
    compute_capability: tuple[int, int]  # (8, 7) on Orin, (11, 0) on Thor
    tensorrt: str  # tensorrt.__version__, e.g. "10.3.0"

    @property
    def sm(self) -> str:
        major, minor = self.compute_capability
        return f"sm_{major}{minor}"

    @property
    def slug(self) -> str:
        """A folder name for this device: `nvidia-h100-80gb-hbm3-sm_90-trt10.3.0`."""
        name = re.sub(r"[^a-z0-9]+", "-", self.gpu.lower()).strip("-") or "gpu"
        return f"{name}-{self.sm}-trt{self.tensorrt}"

    def describe(self) -> str:
        return f"{self.gpu} ({self.sm}) with TensorRT {self.tensorrt}"


@dataclass(frozen=True)
class EngineKey:
    """What one stage's plan was built from and for. Two plans with equal keys are interchangeable."""

    stage: str
    gpu: str
    compute_capability: tuple[int, int]
    tensorrt: str
    onnx_sha256: str  # the graph file and its external data, see onnx_hash
    settings: str  # hash of the build settings: precision mode, profiles, typing (see BuildSettings)

    @classmethod
    def make(cls, stage: str, device: DeviceInfo, onnx_sha256: str, settings: str) -> EngineKey:
        return cls(
            stage, device.gpu, tuple(device.compute_capability), device.tensorrt, onnx_sha256, settings
        )

    @property
    def device(self) -> DeviceInfo:
        return DeviceInfo(self.gpu, self.compute_capability, self.tensorrt)

    @property
    def digest(self) -> str:
        """A short hash of every field: the plan's file name carries it."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def file_name(self) -> str:
        return f"{self.stage}-{self.digest}.plan"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["compute_capability"] = list(self.compute_capability)
        return {"format": KEY_FORMAT, "version": KEY_VERSION, **d}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> EngineKey:
        if not isinstance(d, dict) or d.get("format") != KEY_FORMAT or d.get("version") != KEY_VERSION:
            raise EngineError(f"{where} is not a vinci-edge TensorRT engine record", hint=REBUILD)
        try:
            cc = d["compute_capability"]
            return cls(
                stage=str(d["stage"]),
                gpu=str(d["gpu"]),
                compute_capability=(int(cc[0]), int(cc[1])),
                tensorrt=str(d["tensorrt"]),
                onnx_sha256=str(d["onnx_sha256"]),
                settings=str(d["settings"]),
            )
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise EngineError(f"{where} lacks or garbles {exc}", hint=REBUILD) from exc


REBUILD = "rebuild the TensorRT engines on this machine: `vinci-edge build-engines --engine DIR`"


def rebuild_command(engine_dir: str | Path, out: str | Path | None = None) -> str:
    cmd = f"vinci-edge build-engines --engine {engine_dir}"
    return cmd if out is None else f"{cmd} --out {out}"


def check_key(found: EngineKey, expected: EngineKey, plan: Path, rebuild: str) -> None:
    """Refuse a plan whose key is not the one this device and engine folder need: one EngineError
    naming the first difference (device, then TensorRT, then the graph, then the settings)."""
    if found == expected:
        return
    stage = expected.stage
    if found.stage != stage:
        why = f"{plan.name} holds the '{found.stage}' stage, not '{stage}'"
    elif (found.gpu, found.compute_capability) != (expected.gpu, expected.compute_capability):
        why = (
            f"the TensorRT engine of stage '{stage}' was built for {found.device.describe()}; this is "
            f"{expected.device.describe()}: a plan runs only on the GPU model it was built on"
        )
    elif found.tensorrt != expected.tensorrt:
        why = (
            f"the TensorRT engine of stage '{stage}' was built with TensorRT {found.tensorrt}; this runtime "
            f"has TensorRT {expected.tensorrt}: a plan loads only in the version that built it"
        )
    elif found.onnx_sha256 != expected.onnx_sha256:
        why = (
            f"the TensorRT engine of stage '{stage}' was built from another {stage} graph than the engine "
            "folder holds now (re-exported or re-quantized since)"
        )
    else:
        why = (
            f"the TensorRT engine of stage '{stage}' was built with other settings (precision or "
            "optimization profiles) than asked for"
        )
    raise EngineError(why, hint=f"rebuild it here: `{rebuild}`")


# --------------------------------------------------------------------------------------------------
# Hashing the graphs


def onnx_hash(files: list[Path], cache_dir: Path | None = None) -> str:
    """sha256 over the graph file and its external data, in order. A 9B decoder's weights are GBs
    (seconds to hash), so results are remembered in `cache_dir/HASH_CACHE` by (path, size, mtime_ns):
    a file copied or rewritten since gets hashed again."""
    stamps = [_stamp(f) for f in files]
    cache_file = None if cache_dir is None else cache_dir / HASH_CACHE
    cache = _read_cache(cache_file)
    key = json.dumps(stamps)
    if key in cache:
        return cache[key]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    digest = h.hexdigest()
    if cache_file is not None and cache_file.parent.is_dir():
        cache[key] = digest
        tmp = cache_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        os.replace(tmp, cache_file)
    return digest


def _stamp(f: Path) -> list[Any]:
    st = f.stat()
    return [str(f.resolve()), st.st_size, st.st_mtime_ns]


def _read_cache(path: Path | None) -> dict[str, str]:
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


# --------------------------------------------------------------------------------------------------
# Finding a stage's plan

RECORD_SUFFIX = ".json"
PLAN_SUFFIX = ".plan"


def plan_records(folder: Path, stage: str) -> list[tuple[Path, dict[str, Any]]]:
    """Every (plan path, record) built for `stage` under `folder` (one subfolder per device), newest
    first. A record whose plan file is gone is skipped."""
    found = []
    for record in sorted(folder.glob(f"*/{stage}-*{RECORD_SUFFIX}")):
        plan = record.with_suffix(PLAN_SUFFIX)
        try:
            data = json.loads(record.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if plan.is_file() and isinstance(data, dict):
            found.append((plan, data))
    return sorted(found, key=lambda pr: pr[0].stat().st_mtime_ns, reverse=True)


def find_plan(
    folder: Path, stage: str, device: DeviceInfo, onnx_sha256: str, rebuild: str
) -> tuple[Path, dict[str, Any]]:
    """The plan of `stage` built for this device, TensorRT and graph. Refused with one EngineError
    when there is none: naming what the plans that are there were built for, or saying none is."""
    records = plan_records(folder, stage)
    if not records:
        raise EngineError(
            f"there is no TensorRT engine for stage '{stage}' in {folder}",
            hint=f"build the engines first: `{rebuild}`",
        )
    keys = [(p, r, EngineKey.from_dict(r.get("key"), str(p.with_suffix(RECORD_SUFFIX)))) for p, r in records]
    for plan, record, key in keys:
        expected = EngineKey.make(stage, device, onnx_sha256, key.settings)
        if key == expected:
            return plan, record
    # None fits: name the difference of the closest (same device first, then the newest).
    plan, record, key = min(keys, key=lambda prk: (prk[2].device != device, 0))
    check_key(key, EngineKey.make(stage, device, onnx_sha256, key.settings), plan, rebuild)
    raise AssertionError("unreachable: keys differ")  # check_key raised
