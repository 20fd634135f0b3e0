"""`vinci-edge quantize`, every precision end to end on the tiny engine: the manifest records
precision, method, tool and calibration; every stage's outputs stay close to fp32 on a real clip;
the quantized engine answers about that clip.
"""

from __future__ import annotations

import numpy as np
import pytest
from quant_helpers import CALIB_SIZE, COSINE_FLOOR, MODELOPT, PROMPT, SPECS, _manifest, cosine, stage_outputs

STAGE_PRECISION = {"mixed": {"vision": "int8", "image_projector": "int8", "audio": "int8", "decoder": "int4"}}


def _precisions(name: str) -> dict[str, str]:
    return STAGE_PRECISION.get(name) or dict.fromkeys(
        ("vision", "image_projector", "audio", "decoder"), SPECS[name]
    )


def _tool_version(tool: str) -> str:
    import importlib

    return importlib.import_module(
        {"onnxruntime": "onnxruntime", "nvidia-modelopt": "modelopt"}[tool]
    ).__version__


@pytest.mark.parametrize("name", list(SPECS))
def test_manifest_records_precision_method_tool_and_calibration(quantized, media, name):
    man = _manifest(quantized(name))
    expected = _precisions(name)
    assert man["quantization"]["precisions"] == expected
    assert man["quantization"]["smoothquant"] == (0.5 if name == "int8-sq" else None)
    for stage, precision in expected.items():
        rec, entry = man["precision"][stage], man["stages"][stage]
        assert rec["precision"] == entry["precision"] == precision
        assert rec["method"] not in ("", "none")
        assert rec["tool"] in ("onnxruntime", "nvidia-modelopt")
        assert rec["tool_version"] == _tool_version(rec["tool"])
        assert man["exporters"][rec["tool"]] == rec["tool_version"]
        if precision in MODELOPT:
            cal = rec["calibration"]
            assert cal["videos"] == [str(media)] and cal["seed"] == 0 and cal["requests"] == CALIB_SIZE
            assert cal["samples"] >= 1 and len(cal["sha256"]) == 64
            assert cal["sha256"] == man["quantization"]["calibration"]["stages"][stage]["sha256"]
        else:  # int4 / int8-dynamic round weights to nearest: no calibration to record
            assert rec["calibration"] is None
        if stage == "decoder" and precision in ("int8", "fp8"):
            assert rec["details"]["head"].startswith("fp32")  # the LM head is kept (int8.py)
        # Q/DQ graphs run at the basic optimisation level on the CPU (int8.py, fp8.py).
        assert entry.get("ort_optimization", "all") == ("basic" if precision in ("int8", "fp8") else "all")
    if name == "int8-sq":
        sq = man["precision"]["decoder"]["details"]["smoothquant"]
        assert sq["alpha"] == 0.5 and sq["smoothed"] > 0


@pytest.mark.parametrize("name", list(SPECS))
def test_stage_outputs_stay_close_to_fp32(quantized, stage_inputs, fp32_outputs, name):
    got = stage_outputs(quantized(name), stage_inputs)
    precisions = _precisions(name)
    assert got.keys() == fp32_outputs.keys()
    for key, ref in fp32_outputs.items():
        stage = key.split(".")[0]
        floors = COSINE_FLOOR[name if name in COSINE_FLOOR else precisions[stage]]
        floor = floors[1] if stage == "decoder" else floors[0]
        cos = cosine(got[key], ref)
        assert cos >= floor, f"{name} {key}: cosine {cos:.5f} < {floor}"
        assert not np.array_equal(got[key], ref), f"{name} {key}: output identical to fp32, not quantized?"


@pytest.mark.parametrize("name", ["int8-dynamic", "int4", "int8", "fp8", "int4-awq"])
def test_quantized_engine_answers_about_a_real_clip(quantized, media, name):
    from vinci_edge.generation import GenerationConfig
    from vinci_edge.runtime.pipeline import Pipeline

    pipe = Pipeline.from_engine(quantized(name))
    answer = pipe.ask(PROMPT, GenerationConfig(max_new_tokens=4), video=media)
    assert 1 <= len(answer.token_ids) <= 4
    assert all(0 <= t < pipe.text_table.shape[0] for t in answer.token_ids)
    assert answer.to_json()["prompt_tokens"] > 100  # the clip's frames and sound are in the prompt
