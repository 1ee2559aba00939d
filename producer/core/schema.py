"""The job message as a JSON Schema, and the options table, generated from the declarations.

``stylequeue schema`` prints :func:`job_schema` (JSON Schema 2020-12) for producers in other
languages; :func:`options_table` is the Markdown table of docs/contract.md and docs/engine.md (a test
keeps them equal). Both read every option from :class:`producer.core.params.Params`, so a new option
appears here without an edit.
"""

from __future__ import annotations

from typing import Any

from producer.core.contract import MAX_STYLES, VERSION
from producer.core.params import LAYER_WEIGHT_PRESETS, VGG19_CONV_LAYERS, Option, Params
from producer.core.params import number_text as _n

_URI = {"type": "string", "pattern": "^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/", "description": "s3://bucket/key"}


def option_schema(default: Any, opt: Option) -> dict[str, Any]:
    """The JSON Schema of one option's value."""
    number: dict[str, Any] = {}
    if opt.minimum is not None:
        number["minimum"] = opt.minimum
    if opt.maximum is not None:
        number["maximum"] = opt.maximum
    kinds: dict[str, dict[str, Any]] = {
        "int": {"type": "integer", **number},
        "optional_int": {"type": ["integer", "null"], **number},
        "float": {"type": "number", **number},
        "bool": {"type": "boolean"},
        "choice": {"type": "string", "enum": list(opt.choices)},
        "size": {
            "oneOf": [
                {"type": "integer", **number},
                {"type": "array", "items": {"type": "integer", **number}, "minItems": 2, "maxItems": 2},
            ]
        },
        "layers": {"type": "array", "items": {"enum": list(VGG19_CONV_LAYERS)}, "minItems": 1, "uniqueItems": True},
        "layer_weights": {
            "oneOf": [
                {"type": "array", "items": {"type": "number", "minimum": 0}},
                {"enum": list(LAYER_WEIGHT_PRESETS)},
                {"type": "null"},
            ]
        },
    }
    schema = dict(kinds[opt.kind])
    schema["description"] = opt.help + (f" ({opt.units})" if opt.units else "")
    schema["default"] = list(default) if isinstance(default, tuple) else default
    return schema


def job_schema(params: type[Params] = Params) -> dict[str, Any]:
    """The JSON Schema of the job message (the task's one argument)."""
    options = {f.name: option_schema(f.default, opt) for f, opt in params.options()}
    style_item = {
        "oneOf": [
            _URI,
            {
                "type": "object",
                "properties": {
                    "uri": _URI,
                    "weight": {"type": "number", "minimum": 0},
                    "mask": {
                        "anyOf": [_URI, {"type": "null"}],
                        "description": "grayscale image over the content (and so the output), white where this "
                        "style applies; null: none",
                    },
                },
                "required": ["uri"],
                "additionalProperties": False,
            },
        ]
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://stylequeue.dev/schema/job-v1.json",
        "title": "stylequeue job (task stylequeue.transfer, its only argument)",
        "type": "object",
        "properties": {
            "version": {"const": VERSION, "default": VERSION},
            "job_id": {
                "type": "string",
                "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
                "description": "must equal the task id",
            },
            "content": _URI,
            "style": {"oneOf": [_URI, {"type": "array", "items": style_item, "minItems": 1, "maxItems": MAX_STYLES}]},
            "output": {**_URI, "description": "s3://bucket/key.(png|jpg|jpeg|webp), or a prefix ending in /"},
            "format": {"enum": ["png", "jpeg", "jpg", "webp"]},
            "params": {"type": "object", "properties": options, "additionalProperties": False},
            "submitted_at": {"type": "number", "description": "Unix epoch seconds"},
        },
        "required": ["content", "style", "output"],
        "additionalProperties": False,
    }


def options_table(params: type[Params] = Params) -> str:
    """The Markdown table of every option: name, default, range or choices, meaning."""
    rows = ["| option | default | range | meaning |", "|---|---|---|---|"]
    for f, opt in params.options():
        default = f.default
        shown = (
            "null" if default is None else ", ".join(map(str, default)) if isinstance(default, tuple) else str(default)
        )
        if opt.choices:
            allowed = " · ".join(opt.choices)
        elif opt.minimum is not None or opt.maximum is not None:
            allowed = f"{_n(opt.minimum)} … {_n(opt.maximum)}{' ' + opt.units if opt.units else ''}".strip()
        elif opt.kind == "layers":
            allowed = "block1_conv1 … block5_conv4"
        elif opt.kind == "layer_weights":
            allowed = "numbers · " + " · ".join(LAYER_WEIGHT_PRESETS)
        else:
            allowed = ""
        rows.append(f"| `{f.name}` | `{shown}` | {allowed} | {opt.help} |")
    return "\n".join(rows) + "\n"
