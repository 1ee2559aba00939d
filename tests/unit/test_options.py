"""Every engine option is declared once (producer.core.params.Params); flags, schema and docs follow."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import jsonschema
import pytest
from support.processes import cli

from producer.cli import options
from producer.core.params import Params, option
from producer.core.schema import job_schema, options_table

ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class WithSharpness(Params):
    """Params with one more option, declared the one way options are."""

    sharpness: float = option(0.5, "how sharp the strokes are", "float", minimum=0, maximum=1)


def test_a_new_option_appears_in_the_flags_the_schema_and_the_table_without_other_edits() -> None:
    parser = argparse.ArgumentParser()
    options.add_flags(parser, WithSharpness)
    assert "--sharpness" in parser.format_help() and "how sharp the strokes are" in parser.format_help()
    args = parser.parse_args(["--sharpness", "0.7", "--size", "64x96"])
    assert options.params_from_args(args, WithSharpness) == {"sharpness": 0.7, "size": [64, 96]}
    schema = job_schema(WithSharpness)["properties"]["params"]["properties"]["sharpness"]
    assert schema == {
        "type": "number",
        "minimum": 0,
        "maximum": 1,
        "description": "how sharp the strokes are",
        "default": 0.5,
    }
    assert "| `sharpness` | `0.5` | 0 … 1 | how sharp the strokes are |" in options_table(WithSharpness)
    with pytest.raises(Exception, match=r"params.sharpness: 2.0 is out of range \[0, 1\]"):
        WithSharpness.from_dict({"sharpness": 2})


@pytest.mark.parametrize("command", ["stylize", "submit"])
def test_stylize_and_submit_have_the_same_engine_flags(command: str) -> None:
    text = cli(command, "--help").stdout
    for f, _ in Params.options():
        assert options.flag(f.name) in text, (command, f.name)


def test_the_published_schema_validates_jobs_as_the_contract_does() -> None:
    proc = cli("schema")
    assert proc.returncode == 0
    schema = json.loads(proc.stdout)
    validator = jsonschema.Draft202012Validator(schema)
    good = {
        "content": "s3://photos/a.jpg",
        "style": [{"uri": "s3://styles/s.jpg", "weight": 0.7}, "s3://styles/t.jpg"],
        "output": "s3://results/",
        "params": {"size": [384, 512], "scales": 2, "color": "luminance", "style_layer_weights": "gatys", "seed": 1},
    }
    assert not list(validator.iter_errors(good))
    for bad in ({**good, "params": {"sharpness": 1}}, {**good, "params": {"scales": 0}}, {**good, "colour": 1}):
        assert list(validator.iter_errors(bad)), bad


def test_the_docs_tables_are_the_generated_one() -> None:
    table = options_table()
    assert table in (ROOT / "docs" / "contract.md").read_text(), (
        "regenerate: python -c 'from producer.core.schema import options_table; print(options_table())'"
    )
    assert table in (ROOT / "docs" / "engine.md").read_text()


def test_style_loss_w2_is_an_option_of_the_schema_and_of_params() -> None:
    validator = jsonschema.Draft202012Validator(job_schema())
    job = {"content": "s3://photos/a.jpg", "style": ["s3://styles/s.jpg"], "output": "s3://results/"}
    for value in ("gram", "mean_std", "w2"):
        assert not list(validator.iter_errors({**job, "params": {"style_loss": value}})), value
        assert Params.from_dict({"style_loss": value}).style_loss == value
    assert list(validator.iter_errors({**job, "params": {"style_loss": "wasserstein"}}))
    with pytest.raises(Exception, match="params.style_loss: 'wasserstein' is not one of gram, mean_std, w2"):
        Params.from_dict({"style_loss": "wasserstein"})
