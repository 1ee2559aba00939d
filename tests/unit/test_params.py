import pytest

from producer.core.errors import InvalidJob, PermanentError
from producer.core.params import Params


def test_defaults_are_the_seed_tutorial() -> None:
    p = Params()
    assert (p.content_weight, p.style_weight, p.tv_weight, p.tv_power) == (0.025, 1.0, 1.0, 1.25)
    assert p.content_layers == ("block5_conv2",)
    assert p.style_layers == tuple(f"block{i}_conv1" for i in range(1, 6))
    assert p.layer_weights == (0.2,) * 5
    assert (p.iterations, p.init, p.normalization) == (100, "content", "seed")


def test_round_trip_through_json_dict() -> None:
    p = Params(
        size=(32, 48),
        iterations=7,
        style_layers=("block1_conv1", "block2_conv1"),
        style_layer_weights=(0.5, 2.0),
        color="preserve",
        seed=3,
    )
    assert Params.from_dict(p.to_dict()) == p


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"iterations": -1}, "params.iterations"),
        ({"iterations": 0}, "params.iterations"),
        ({"iterations": "10"}, "params.iterations"),
        ({"iterations": True}, "params.iterations"),
        ({"size": 0}, "params.size"),
        ({"size": 100000}, "params.size"),
        ({"size": [32]}, "params.size"),
        ({"content_weight": -1.0}, "params.content_weight"),
        ({"style_weight": float("nan")}, "params.style_weight"),
        ({"content_layers": ["block9_conv1"]}, "params.content_layers"),
        ({"style_layers": []}, "params.style_layers"),
        ({"style_layers": ["block1_conv1"] * 2}, "params.style_layers"),
        ({"style_layer_weights": [1.0]}, "params.style_layer_weights"),
        ({"normalization": "fancy"}, "params.normalization"),
        ({"style_loss": "w3"}, "params.style_loss"),
        ({"init": "zeros"}, "params.init"),
        ({"colour": True}, "params.colour"),
    ],
)
def test_bad_values_name_the_field(data: dict, field: str) -> None:
    with pytest.raises(InvalidJob) as err:
        Params.from_dict(data)
    assert err.value.field == field
    assert str(err.value).startswith(field)
    assert isinstance(err.value, PermanentError) and not err.value.retryable


def test_not_an_object() -> None:
    with pytest.raises(InvalidJob, match="params: must be an object"):
        Params.from_dict([1, 2])


def test_options_added_later_are_left_out_of_a_message_while_at_their_default() -> None:
    """A job that does not use ``schedule`` sends the options the contract's first workers know:
    a worker of before accepts it, and the job's fingerprint (checkpoints, written outputs) stays
    what it was."""
    added = {f.name for f, opt in Params.options() if opt.added}
    assert "schedule" in added
    assert set(Params().to_dict()) == {f.name for f, _ in Params.options()} - added
    assert Params(schedule="draft").to_dict()["schedule"] == "draft"
    assert Params.from_dict(Params(schedule="draft").to_dict()) == Params(schedule="draft")
