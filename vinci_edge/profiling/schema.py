"""The schema of profile.json (documented in docs/profile-schema.md) and a small validator.

The schema is a dict in the JSON Schema vocabulary - type, properties, required, items,
additionalProperties, enum, minimum - restricted to that subset so it can be checked here without the
`jsonschema` package; tools that have it can validate against the same dict.
"""

from __future__ import annotations

from typing import Any

SCHEMA_NAME = "vinci-edge-profile"
SCHEMA_VERSION = 1

NUM = {"type": "number"}
NUM_OR_NULL = {"type": ["number", "null"]}
INT = {"type": "integer", "minimum": 0}
INT_OR_NULL = {"type": ["integer", "null"]}
STR = {"type": "string"}
STR_OR_NULL = {"type": ["string", "null"]}

# n, mean, min, max, p50, p90, p99 of a list of measurements; only n when there were none.
STATS = {
    "type": "object",
    "required": ["n"],
    "properties": {
        "n": INT,
        **{k: NUM for k in ("mean", "min", "max", "p50", "p90", "p99")},
    },
    "additionalProperties": False,
}

RECORD = {
    "type": "object",
    "required": ["name", "start_ns", "end_ns", "attrs"],
    "properties": {
        "name": STR,
        "start_ns": {"type": "integer"},
        "end_ns": {"type": "integer"},
        "attrs": {"type": "object"},
    },
}

RUN = {
    "type": "object",
    "required": [
        "index",
        "warmup",
        "start_ns",
        "end_ns",
        "first_token_ns",
        "prompt_positions",
        "new_tokens",
        "stop_reason",
        "records",
    ],
    "properties": {
        "index": INT,
        "warmup": {"type": "boolean"},
        "start_ns": {"type": "integer"},
        "end_ns": {"type": "integer"},
        "first_token_ns": INT_OR_NULL,
        "prompt_positions": INT,
        "new_tokens": INT,
        "stop_reason": {"type": "string", "enum": ["eos", "stop_string", "max_new_tokens"]},
        "records": {"type": "array", "items": RECORD},
    },
}

REQUESTS = {
    "type": "object",
    "required": [
        "runs",
        "prompt_positions",
        "new_tokens",
        "stages_s",
        "time_to_first_token_s",
        "end_to_end_s",
        "decode_tokens_per_second",
        "prefill_tokens_per_second",
        "decode_step_s",
        "decode_step_median_s",
        "unaccounted_s",
        "overhead_budget",
    ],
    "properties": {
        "runs": INT,
        "prompt_positions": INT_OR_NULL,
        "new_tokens": STATS,
        "stages_s": {"type": "object", "additionalProperties": STATS},
        "time_to_first_token_s": STATS,
        "end_to_end_s": STATS,
        "decode_tokens_per_second": STATS,
        "prefill_tokens_per_second": STATS,
        "decode_step_s": STATS,
        "decode_step_median_s": {"type": "array", "items": NUM},
        "unaccounted_s": STATS,
        "overhead_budget": {
            "type": "object",
            "required": ["fraction", "seconds", "all_runs_within"],
            "properties": {"fraction": NUM, "seconds": NUM, "all_runs_within": {"type": "boolean"}},
        },
    },
}

BOUND = {
    "type": "object",
    "required": [
        "bandwidth_bytes_per_second",
        "weight_bytes_per_token",
        "kv_bytes_per_position",
        "context_positions",
        "kv_bytes_per_token",
        "bytes_per_token",
        "bound_tokens_per_second",
        "measured_tokens_per_second",
        "percent_of_bound",
    ],
    "properties": {
        "bandwidth_bytes_per_second": NUM,
        "weight_bytes_per_token": INT,
        "kv_bytes_per_position": INT,
        "context_positions": NUM,
        "kv_bytes_per_token": NUM,
        "bytes_per_token": NUM,
        "bound_tokens_per_second": NUM_OR_NULL,
        "measured_tokens_per_second": NUM_OR_NULL,
        "percent_of_bound": NUM_OR_NULL,
    },
}

GPU_MEMORY = {
    "type": "object",
    "required": ["available"],
    "properties": {
        "available": {"type": "boolean"},
        "reason": STR,
        "source": STR,
        "peak_bytes": INT,
        "at_start_bytes": INT,
    },
}

ENGINE = {
    "type": "object",
    "required": [
        "label",
        "engine",
        "model_id",
        "precision",
        "providers",
        "threads",
        "stitch",
        "nvtx",
        "sizes",
        "load",
        "requests",
        "runs",
        "answer",
        "memory",
        "decoder",
        "bound",
    ],
    "properties": {
        "label": STR,
        "engine": STR,
        "model_id": STR,
        "precision": {"type": "object"},
        "providers": {"type": "object", "additionalProperties": STR},
        "threads": INT,
        "stitch": STR,
        "nvtx": STR,
        "sizes": {
            "type": "object",
            "required": ["stages", "other", "total_bytes"],
            "properties": {
                "stages": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["files", "bytes"],
                        "properties": {
                            "files": {"type": "object", "additionalProperties": INT},
                            "bytes": INT,
                        },
                    },
                },
                "other": {"type": "object", "additionalProperties": INT},
                "total_bytes": INT,
            },
        },
        "load": {
            "type": "object",
            "required": [
                "engine_s",
                "engine_end_ns",
                "sessions_s",
                "total_s",
                "start_ns",
                "end_ns",
                "records",
            ],
            "properties": {
                "engine_s": NUM,
                "engine_end_ns": {"type": "integer"},
                "sessions_s": {"type": "object", "additionalProperties": NUM},
                "total_s": NUM,
                "start_ns": {"type": "integer"},
                "end_ns": {"type": "integer"},
                "records": {"type": "array", "items": RECORD},
            },
        },
        "requests": REQUESTS,
        "runs": {"type": "array", "items": RUN},
        "answer": {
            "type": "object",
            "required": ["text", "token_ids", "stop_reason"],
            "properties": {"text": STR, "token_ids": {"type": "array", "items": INT}, "stop_reason": STR},
        },
        "memory": {
            "type": "object",
            "required": [
                "rss_before_load_bytes",
                "peak_rss_load_bytes",
                "peak_rss_requests_bytes",
                "peak_rss_bytes",
                "gpu",
            ],
            "properties": {
                "rss_before_load_bytes": INT_OR_NULL,
                "peak_rss_load_bytes": INT,
                "peak_rss_requests_bytes": INT_OR_NULL,
                "peak_rss_bytes": INT,
                "gpu": GPU_MEMORY,
            },
        },
        "decoder": {
            "type": "object",
            "required": ["weight_bytes_per_token", "initializer_bytes", "kv_bytes_per_position", "dtype"],
            "properties": {
                "weight_bytes_per_token": INT,
                "initializer_bytes": INT,
                "kv_bytes_per_position": INT,
                "dtype": STR,
            },
        },
        "bound": BOUND,
    },
}

COMPARISON = {
    "type": "object",
    "required": ["baseline", "labels", "rows"],
    "properties": {
        "baseline": STR,
        "labels": {"type": "array", "items": STR},
        "rows": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["metric", "label", "unit", "better", "values", "ratios"],
                "properties": {
                    "metric": STR,
                    "label": STR,
                    "unit": {"type": "string", "enum": ["s", "tok/s", "bytes", "%"]},
                    "better": {"type": "string", "enum": ["lower", "higher"]},
                    "values": {"type": "array", "items": NUM_OR_NULL},
                    "ratios": {"type": "array", "items": NUM_OR_NULL},
                },
            },
        },
    },
}

PROFILE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "schema",
        "schema_version",
        "created",
        "machine",
        "request",
        "isolated",
        "engines",
        "comparison",
    ],
    "properties": {
        "schema": {"type": "string", "enum": [SCHEMA_NAME]},
        "schema_version": {"type": "integer", "enum": [SCHEMA_VERSION]},
        "created": STR,
        "machine": {
            "type": "object",
            "required": [
                "platform",
                "cpu",
                "cpu_count",
                "python",
                "onnxruntime",
                "vinci_edge",
                "memory_bandwidth",
            ],
            "properties": {
                "platform": STR,
                "cpu": STR,
                "cpu_count": INT_OR_NULL,
                "python": STR,
                "onnxruntime": STR_OR_NULL,
                "vinci_edge": STR,
                "memory_bandwidth": {
                    "type": "object",
                    "required": [
                        "bytes_per_second",
                        "threads",
                        "array_bytes",
                        "repeats",
                        "by_threads",
                        "method",
                        "samples_bytes_per_second",
                    ],
                    "properties": {
                        "bytes_per_second": NUM,
                        "threads": INT,
                        "array_bytes": INT,
                        "repeats": INT,
                        "by_threads": {"type": "object", "additionalProperties": NUM},
                        "method": STR,
                        "samples_bytes_per_second": {"type": "array", "items": NUM},
                    },
                },
            },
        },
        "request": {
            "type": "object",
            "required": [
                "prompt",
                "video",
                "audio",
                "image",
                "num_frames",
                "max_new_tokens",
                "runs",
                "warmup",
                "stop_at_eos",
            ],
            "properties": {
                "prompt": STR,
                "video": STR_OR_NULL,
                "audio": STR_OR_NULL,
                "image": STR_OR_NULL,
                "num_frames": INT_OR_NULL,
                "max_new_tokens": INT,
                "runs": INT,
                "warmup": INT,
                "stop_at_eos": {"type": "boolean"},
            },
        },
        "isolated": {"type": "boolean"},
        "engines": {"type": "array", "items": ENGINE},
        "comparison": {"type": ["object", "null"], **{k: v for k, v in COMPARISON.items() if k != "type"}},
    },
}


# ---- validation -------------------------------------------------------------------------------------
_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def validate(value: Any, schema: dict[str, Any] = PROFILE_SCHEMA, path: str = "$") -> list[str]:
    """Every way `value` breaks `schema`, as 'path: problem' strings (empty: valid)."""
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(_TYPES[t](value) for t in types):
            return [f"{path}: expected {' or '.join(types)}, got {type(value).__name__}"]
    problems = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if "minimum" in schema and isinstance(value, (int, float)) and value < schema["minimum"]:
        problems.append(f"{path}: {value} is below {schema['minimum']}")
    if isinstance(value, dict):
        problems += _validate_object(value, schema, path)
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            problems += validate(item, schema["items"], f"{path}[{i}]")
    return problems


def _validate_object(value: dict[str, Any], schema: dict[str, Any], path: str) -> list[str]:
    problems = [f"{path}: missing '{k}'" for k in schema.get("required", []) if k not in value]
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for k, v in value.items():
        if k in props:
            problems += validate(v, props[k], f"{path}.{k}")
        elif extra is False:
            problems.append(f"{path}: unexpected '{k}'")
        elif isinstance(extra, dict):
            problems += validate(v, extra, f"{path}.{k}")
    return problems
