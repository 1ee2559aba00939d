"""The engine's options: declared once, here, with their help, units and ranges.

Every option is a field of :class:`Params` whose metadata (:class:`Option`) says what it means,
its unit, its range or choices. From that one declaration come the validation of jobs and of the
command line, the ``stylequeue stylize`` and ``stylequeue submit`` flags
(:mod:`producer.cli.options`), the JSON Schema of the job message (``stylequeue schema``,
:mod:`producer.core.schema`) and the options tables of docs/engine.md and docs/contract.md. Adding an
option is one field here plus its implementation in the engine.

The defaults reproduce the seed tutorial exactly (Gatys et al. in Keras/TF1): content at
``block5_conv2`` with weight 0.025, raw-Gram style loss over ``block1_conv1 … block5_conv1`` with
weight 1, total variation with weight 1 and power 1.25, 100 L-BFGS iterations, starting from the
content image, one scale. ``normalization="invariant"`` switches to losses that do not grow with
image size (see :mod:`worker.nst.losses` and docs/engine.md for recommended weights).

This module is pure Python (no NumPy, no TensorFlow) so the light client can validate jobs.
"""

from __future__ import annotations

import json
import math
from dataclasses import Field, dataclass, field, fields
from typing import Any

from producer.core.errors import InvalidJob
from producer.core.schedules import SCHEDULE_NAMES, SCHEDULED_OPTIONS, SCHEDULES

#: The 16 convolution layers of VGG19, in network order. Losses may use any of them.
VGG19_CONV_LAYERS: tuple[str, ...] = tuple(
    f"block{b}_conv{c}" for b, n in ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4)) for c in range(1, n + 1)
)
#: Output channels of each VGG19 conv layer.
CHANNELS: dict[str, int] = dict(zip(VGG19_CONV_LAYERS, [64] * 2 + [128] * 2 + [256] * 4 + [512] * 8))
#: The values of ``style_loss`` (the engine's losses implement each).
STYLE_LOSSES = ("gram", "mean_std", "w2")

SEED_CONTENT_LAYERS: tuple[str, ...] = ("block5_conv2",)
SEED_STYLE_LAYERS: tuple[str, ...] = tuple(f"block{b}_conv1" for b in range(1, 6))

#: Named per-layer style weights (normalized to sum 1 over the style layers): ``equal`` is the
#: seed's 1/L; ``gatys`` weighs each layer by 1/N² (N its channels), as in Gatys et al.'s own
#: weighting of the Gram terms; ``decreasing`` is crowsonkb's 256, 64, 16, 4, 1 (each layer a
#: quarter of the one before): fine textures from the shallow layers dominate.
LAYER_WEIGHT_PRESETS = ("equal", "gatys", "decreasing")

#: Smallest output side in pixels: VGG19's four pooling layers before block 5 need 16 px.
MIN_SIZE_PX = 16
#: Hard upper bounds that no job may exceed; ops lower them per deployment with settings.
MAX_SIZE_PX = 8192
MAX_ITERATIONS = 100_000
#: Smallest tile (px): below it the halo around each tile would dwarf the tile.
MIN_TILE_PX = 64
#: Options objects validated already, by their JSON (bounded).
_VALIDATED: dict[Any, Any] = {}
_VALIDATED_MAX = 1024


@dataclass(frozen=True)
class Option:
    """What an option is, for people and for the generators.

    Attributes:
        help: One line: what it does (the CLI help, the docs' tables, the schema's description).
        kind: ``int``, ``float``, ``bool``, ``choice``, ``size`` (int or ``[h, w]``), ``layers``
            (list of VGG19 conv layers), ``layer_weights`` (list of numbers or a preset name),
            ``optional_int`` (int or null).
        units: Unit of the value (``px``, ``iterations``), if any.
        minimum: Smallest value allowed (numbers, sizes).
        maximum: Largest value allowed.
        choices: The values allowed (``choice``).
        added: Whether the option came after the contract's first workers: :meth:`Params.to_dict`
            leaves it out while it has its default, so a message that does not use it is the
            message it always was (a worker of before accepts it; a job's fingerprint, and so
            its checkpoint and its written output, stay valid across the upgrade).
    """

    help: str
    kind: str
    units: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    added: bool = False


def option(default: Any, help: str, kind: str, **details: Any) -> Any:
    """Declare a :class:`Params` field with its :class:`Option`."""
    return field(default=default, metadata={"option": Option(help, kind, **details)})


@dataclass(frozen=True)
class Params:
    """Options of one style transfer; see each field's :class:`Option` (``Params.options()``)."""

    size: int | tuple[int, int] = option(
        512,
        "output size: the longest side, or [height, width] exactly",
        "size",
        units="px",
        minimum=MIN_SIZE_PX,
        maximum=MAX_SIZE_PX,
    )
    iterations: int = option(
        100, "L-BFGS iterations at the output size", "int", units="iterations", minimum=1, maximum=MAX_ITERATIONS
    )
    content_weight: float = option(0.025, "weight of the content loss", "float", minimum=0)
    style_weight: float = option(1.0, "weight of the style loss", "float", minimum=0)
    tv_weight: float = option(1.0, "weight of the total-variation (smoothness) loss", "float", minimum=0)
    tv_power: float = option(1.25, "exponent of dx² + dy² in the total variation", "float", minimum=1)
    content_layers: tuple[str, ...] = option(
        SEED_CONTENT_LAYERS, "VGG19 conv layers compared with the content", "layers"
    )
    style_layers: tuple[str, ...] = option(SEED_STYLE_LAYERS, "VGG19 conv layers compared with the style", "layers")
    style_layer_weights: tuple[float, ...] | str = option(
        "equal",
        "weight of each style layer: numbers (one per layer) or equal, gatys (1/channels²), decreasing (÷4 per layer)",
        "layer_weights",
    )
    style_loss: str = option(
        "gram",
        "style statistics: gram (Gram matrices, the seed's), mean_std (Gram plus per-channel mean and std) "
        "or w2 (Wasserstein-2 distance of Gaussians fitted to the features)",
        "choice",
        choices=STYLE_LOSSES,
    )
    normalization: str = option(
        "seed",
        "seed (the tutorial's sums) or invariant (means: the same look at any size)",
        "choice",
        choices=("seed", "invariant"),
    )
    style_scale: float = option(
        1.0, "style image size relative to the output (linear; aspect kept)", "float", minimum=0.01, maximum=10
    )
    color: str = option(
        "none",
        "colour control: none, preserve (content chroma put back after), luminance (optimize luminance "
        "only), match (style colours matched to the content's first)",
        "choice",
        choices=("none", "preserve", "luminance", "match"),
    )
    init: str = option(
        "content",
        "starting image: content, noise, or image (a file: stylize --init-image)",
        "choice",
        choices=("content", "noise", "image"),
    )
    seed: int | None = option(
        None,
        "seed of the noise init; the same seed gives the same output on CPU",
        "optional_int",
        minimum=0,
        maximum=2**32 - 1,
    )
    precision: str = option(
        "auto",
        "VGG19's arithmetic: float32, bfloat16, or auto (bfloat16 where the hardware runs it natively)",
        "choice",
        choices=("auto", "float32", "bfloat16"),
    )
    scales: int = option(
        1,
        "coarse-to-fine levels, each √2 smaller than the next, the last at the output size",
        "int",
        minimum=1,
        maximum=8,
    )
    scale_iterations: int | None = option(
        None,
        "L-BFGS iterations at each coarser level (default: iterations)",
        "optional_int",
        units="iterations",
        minimum=1,
        maximum=MAX_ITERATIONS,
    )
    tolerance: float = option(
        0.0,
        "stop early once the loss improved by less than this fraction over tolerance_window iterations (0: off)",
        "float",
        minimum=0,
        maximum=1,
    )
    tolerance_window: int = option(10, "iterations the tolerance looks back over", "int", minimum=1, maximum=1000)
    schedule: str = option(
        "none",
        "a coarse-to-fine plan chosen from measurements: draft, standard or high (aimed at the loss of 50, 200 "
        "or 500 single-scale iterations in at most 60% of their time; sets iterations, scales, "
        "scale_iterations, tolerance, tolerance_window), or none (those options as given)",
        "choice",
        choices=SCHEDULE_NAMES,
        added=True,
    )
    tile: int | None = option(
        None,
        "evaluate images larger than this in tiles of this many px, exactly (0: never; default: automatic, "
        "when the untiled image would not fit the device's memory)",
        "optional_int",
        units="px",
        minimum=0,
        maximum=MAX_SIZE_PX,
    )
    lbfgs_memory: int = option(
        10,
        "L-BFGS correction pairs kept (its memory: 2·m + 4 float64 copies of the image)",
        "int",
        minimum=3,
        maximum=50,
    )

    def __post_init__(self) -> None:
        """Validate every field; raise :class:`InvalidJob` naming the first bad one."""
        self._check()

    @classmethod
    def options(cls) -> list[tuple[Field[Any], Option]]:
        """Every option: its dataclass field (name, default) and its :class:`Option`."""
        return [(f, f.metadata["option"]) for f in fields(cls)]

    # -- (de)serialization -------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Any, prefix: str = "params") -> Params:
        """Build from a JSON object, rejecting unknown fields, wrong types and bad values.

        ``preserve_colors: true`` (contract version 1 before ``color``) is read as
        ``color: "preserve"``.

        Args:
            data: The decoded JSON object (``None`` means all defaults).
            prefix: Name of the object in error messages, e.g. ``"params"``.

        Raises:
            InvalidJob: naming the offending field.
        """
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise InvalidJob(prefix, f"must be an object, got {type(data).__name__}")
        try:
            memo = (cls, json.dumps(data, sort_keys=True, separators=(",", ":")))
        except (TypeError, ValueError):
            memo = None  # not JSON: the checks below say why
        known_params = _VALIDATED.get(memo) if memo is not None else None
        if known_params is not None:
            return known_params  # a batch repeats the same options: validated once
        params = cls._from_dict(data, prefix)
        if memo is not None:
            if len(_VALIDATED) >= _VALIDATED_MAX:
                _VALIDATED.clear()
            _VALIDATED[memo] = params
        return params

    @classmethod
    def _from_dict(cls, data: dict[str, Any], prefix: str) -> Params:
        data = dict(data)
        legacy = data.pop("preserve_colors", None)
        if legacy is not None:
            if not isinstance(legacy, bool):
                raise InvalidJob(f"{prefix}.preserve_colors", f"must be true or false, got {legacy!r}")
            if legacy:
                data.setdefault("color", "preserve")
        known = {f.name: opt for f, opt in cls.options()}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise InvalidJob(f"{prefix}.{unknown[0]}", f"unknown option (known: {', '.join(sorted(known))})")
        kwargs = {name: _coerce(f"{prefix}.{name}", known[name], value) for name, value in data.items()}
        return cls(**kwargs)

    @property
    def longest_px(self) -> int:
        """The output's longest side, px: ``size`` itself, or the larger of a ``[height, width]`` pair."""
        return self.size if isinstance(self.size, int) else max(self.size)

    @property
    def most_iterations(self) -> int:
        """The most L-BFGS iterations the job can run: the output level's plus every coarser level's."""
        schedule = SCHEDULES.get(self.schedule)
        if schedule is not None:
            return schedule.most_iterations
        return self.iterations + (self.scales - 1) * (self.scale_iterations or self.iterations)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (tuples become lists) that :meth:`from_dict` accepts.

        Every option, but an :attr:`Option.added` one at its default.
        """
        values = self.__dict__.get("_values")
        if values is None:
            values = tuple(
                (f.name, getattr(self, f.name))
                for f, opt in self.options()
                if not (opt.added and getattr(self, f.name) == f.default)
            )
            object.__setattr__(self, "_values", values)  # frozen: computed once
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values}

    def replace(self, **changes: Any) -> Params:
        """Return a copy with some fields changed (validated again)."""
        data = self.to_dict()
        data.update(changes)
        return Params.from_dict(data)

    # -- validation ----------------------------------------------------------------------------

    def _check(self) -> None:
        for f, opt in self.options():
            value = getattr(self, f.name)
            where = f"params.{f.name}"
            if opt.kind in ("int", "float") or (opt.kind == "optional_int" and value is not None):
                if opt.kind == "float":
                    _finite(where, value)
                _in_range(where, value, opt)
            elif opt.kind == "choice" and value not in opt.choices:
                raise InvalidJob(where, f"{value!r} is not one of {', '.join(opt.choices)}")
        if self.schedule != "none":
            defaults = {f.name: f.default for f in fields(self)}
            for name in SCHEDULED_OPTIONS:
                if getattr(self, name) != defaults[name]:
                    raise InvalidJob(
                        f"params.{name}",
                        f"is set by schedule {self.schedule!r}: leave it out, or use schedule 'none' to set it",
                    )
        if self.tile is not None and 0 < self.tile < MIN_TILE_PX:
            raise InvalidJob("params.tile", f"{self.tile} px: a tile is 0 (never tile) or at least {MIN_TILE_PX} px")
        size = self.size
        sides = (size,) if isinstance(size, int) else tuple(size)
        if len(sides) not in (1, 2) or not all(isinstance(s, int) and not isinstance(s, bool) for s in sides):
            raise InvalidJob("params.size", "must be an integer or a [height, width] pair of integers")
        for s in sides:
            if not MIN_SIZE_PX <= s <= MAX_SIZE_PX:
                raise InvalidJob("params.size", f"{s} px is out of range [{MIN_SIZE_PX}, {MAX_SIZE_PX}]")
        for name in ("content_layers", "style_layers"):
            layers = getattr(self, name)
            if not layers:
                raise InvalidJob(f"params.{name}", "must name at least one layer")
            if len(set(layers)) != len(layers):
                raise InvalidJob(f"params.{name}", "names a layer more than once")
            for layer in layers:
                if layer not in VGG19_CONV_LAYERS:
                    raise InvalidJob(f"params.{name}", f"{layer!r} is not a VGG19 conv layer")
        weights = self.style_layer_weights
        if isinstance(weights, str):
            if weights not in LAYER_WEIGHT_PRESETS:
                raise InvalidJob(
                    "params.style_layer_weights",
                    f"{weights!r} is not a list of numbers nor one of {', '.join(LAYER_WEIGHT_PRESETS)}",
                )
        else:
            if len(weights) != len(self.style_layers):
                raise InvalidJob("params.style_layer_weights", "needs one weight per style layer")
            for w in weights:
                _finite("params.style_layer_weights", w)
                if w < 0:
                    raise InvalidJob("params.style_layer_weights", f"{w} must be >= 0")
            if sum(weights) <= 0:
                raise InvalidJob("params.style_layer_weights", "must not all be 0")

    @property
    def layer_weights(self) -> tuple[float, ...]:
        """Per-style-layer weights: the given numbers, or the preset's, normalized to sum 1."""
        weights = self.style_layer_weights
        if weights == "gatys":
            raw: tuple[float, ...] = tuple(1.0 / CHANNELS[layer] ** 2 for layer in self.style_layers)
        elif weights == "decreasing":
            raw = tuple(4.0**-i for i in range(len(self.style_layers)))
        elif weights == "equal":
            raw = (1.0,) * len(self.style_layers)
        else:
            raw = tuple(weights)  # type: ignore[arg-type]
        total = sum(raw)
        return tuple(w / total for w in raw)


def _finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise InvalidJob(name, f"{value} must be a finite number")


def _in_range(name: str, value: float, opt: Option) -> None:
    low, high = opt.minimum, opt.maximum
    if (low is not None and value < low) or (high is not None and value > high):
        raise InvalidJob(name, f"{value} is out of range [{_num(low)}, {_num(high)}]")


def _num(v: float | None) -> str:
    return number_text(v)


def number_text(value: float | None) -> str:
    """A bound as people write it: ``0``, ``0.01``, ``4294967295`` (empty for none)."""
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return _is_int(v) or isinstance(v, float)


#: What each kind of option accepts, for error messages.
EXPECTED = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "choice": "a string",
    "size": "an integer or a [height, width] pair",
    "layers": "a list of strings",
    "layer_weights": "a list of numbers or a preset name",
    "optional_int": "an integer or null",
}


def _coerce(path: str, opt: Option, value: Any) -> Any:
    """Check one JSON value's type by its option's kind and convert lists to tuples."""
    kind = opt.kind
    if kind == "int":
        ok = _is_int(value)
    elif kind == "optional_int":
        ok = value is None or _is_int(value)
    elif kind == "float":
        ok = _is_num(value)
        value = float(value) if ok else value
    elif kind == "choice":
        ok = isinstance(value, str)
    elif kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "layers":
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    elif kind == "layer_weights":
        value = "equal" if value is None else value  # null: the default, as before presets existed
        ok = isinstance(value, str) or (isinstance(value, (list, tuple)) and all(_is_num(v) for v in value))
        value = value if isinstance(value, str) or not ok else tuple(float(v) for v in value)
    else:  # size: int or [h, w]
        ok = _is_int(value) or (isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_int(v) for v in value))
        value = tuple(value) if ok and not _is_int(value) else value
    if not ok:
        raise InvalidJob(path, f"must be {EXPECTED[kind]}, got {type(value).__name__} {value!r}"[:200])
    return value
