"""Command-line flags generated from the engine's options (:class:`producer.core.params.Params`).

``stylequeue stylize`` and ``stylequeue submit`` call :func:`add_flags`: each option becomes
``--name-with-dashes`` with its help text, default, unit, range or choices, all read from the
option's declaration. :func:`params_from_args` turns the flags given back into the ``params``
object (flags left out keep the option's default). Nothing here names an option.
"""

from __future__ import annotations

import argparse
from typing import Any

from producer.core.errors import InvalidJob
from producer.core.params import Option, Params, number_text


def flag(name: str) -> str:
    """The flag of option ``name``: ``style_layers`` → ``--style-layers``."""
    return "--" + name.replace("_", "-")


def _size(text: str) -> int | list[int]:
    """``512`` (longest side) or ``384x512`` (height x width)."""
    try:
        if "x" in text.lower():
            h, w = text.lower().split("x", 1)
            return [int(h), int(w)]
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (512 or HEIGHTxWIDTH)") from None


def _layers(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _layer_weights(text: str) -> str | list[float]:
    if text.replace("_", "").isalpha():
        return text  # a preset name, checked with the rest of the options
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers nor a preset") from None


_TYPES: dict[str, Any] = {
    "int": int,
    "optional_int": int,
    "float": float,
    "size": _size,
    "layers": _layers,
    "layer_weights": _layer_weights,
}
_METAVARS = {"size": "PX|HxW", "layers": "LAYER,...", "layer_weights": "W,...|PRESET"}


def describe(default: Any, opt: Option) -> str:
    """The help text of an option: its help, unit, range or choices, and default."""
    parts = [opt.help]
    if opt.minimum is not None or opt.maximum is not None:
        parts.append(
            f"range {number_text(opt.minimum)}…{number_text(opt.maximum)}{' ' + opt.units if opt.units else ''}"
        )
    elif opt.units:
        parts.append(opt.units)
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
    parts.append(f"default {shown}")
    return "; ".join(parts)


def add_flags(parser: argparse.ArgumentParser, params: type[Params] = Params) -> None:
    """Add one flag per option of ``params`` to ``parser``."""
    group = parser.add_argument_group("engine options (the job's params)")
    for f, opt in params.options():
        help_text = describe(f.default, opt).replace("%", "%%")
        if opt.kind == "bool":
            group.add_argument(
                flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif opt.kind == "choice":
            group.add_argument(flag(f.name), dest=f.name, choices=opt.choices, default=None, help=help_text)
        else:
            group.add_argument(
                flag(f.name),
                dest=f.name,
                type=_TYPES[opt.kind],
                default=None,
                metavar=_METAVARS.get(opt.kind),
                help=help_text,
            )


def params_from_args(args: argparse.Namespace, params: type[Params] = Params) -> dict[str, Any]:
    """The ``params`` object of the flags given (flags left out are not in it)."""
    return {f.name: getattr(args, f.name) for f, _ in params.options() if getattr(args, f.name, None) is not None}


def add_mask_flag(p: argparse.ArgumentParser, what: str) -> None:
    """``--style-mask``, given once per style image, in order (regional styles)."""
    p.add_argument(
        "--style-mask",
        action="append",
        metavar="MASK",
        help=f"grayscale image over the output, white where a style applies ({what}): once per style image, "
        "in order; 'none' for a style without one",
    )


def masks_of(given: list[str] | None, n_styles: int) -> list[str | None]:
    """``--style-mask`` values, one per style (``none``: that style has none); [] when not given.

    Raises:
        InvalidJob: not one per style.
    """
    if given is None:
        return []
    if len(given) != n_styles:
        raise InvalidJob(
            "--style-mask", f"given {len(given)} times for {n_styles} style images: once per style, in order"
        )
    return [None if m.lower() == "none" else m for m in given]
