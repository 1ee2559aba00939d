"""The engine's options: one typed, validated object shared by the CLI, the client and the worker.

The defaults reproduce the seed tutorial exactly (Gatys et al. in Keras/TF1): content at
``block5_conv2`` with weight 0.025, raw-Gram style loss over ``block1_conv1 … block5_conv1`` with
weight 1, total variation with weight 1 and power 1.25, 100 L-BFGS iterations, starting from the
content image. ``normalization="invariant"`` switches to losses that do not grow with image size
(see :mod:`worker.losses` and the README for recommended weights).

This module is pure Python (no NumPy, no TensorFlow) so the light client can validate jobs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Literal

from producer.errors import InvalidJob

#: The 16 convolution layers of VGG19, in network order. Losses may use any of them.
VGG19_CONV_LAYERS: tuple[str, ...] = tuple(
    f"block{b}_conv{c}" for b, n in ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4)) for c in range(1, n + 1)
)

SEED_CONTENT_LAYERS: tuple[str, ...] = ("block5_conv2",)
SEED_STYLE_LAYERS: tuple[str, ...] = tuple(f"block{b}_conv1" for b in range(1, 6))

Normalization = Literal["seed", "invariant"]
Init = Literal["content", "noise", "image"]

#: Smallest output side in pixels: VGG19's four pooling layers before block 5 need 16 px.
MIN_SIZE_PX = 16
#: Hard upper bounds that no job may exceed; ops lower them per deployment with settings.
MAX_SIZE_PX = 8192
MAX_ITERATIONS = 100_000


@dataclass(frozen=True)
class Params:
    """Options of one style transfer.

    Attributes:
        size: Output size in pixels: an int is the longest side (aspect ratio kept), a pair is an
            exact ``[height, width]``.
        iterations: L-BFGS iterations (scipy's ``maxiter``); one iteration may evaluate the loss
            more than once during its line search.
        content_weight: Weight of the content loss (seed: 0.025).
        style_weight: Weight of the style loss (seed: 1.0).
        tv_weight: Weight of the total-variation loss (seed: 1.0).
        tv_power: Exponent applied to ``dx² + dy²`` in the total-variation loss (seed: 1.25).
        content_layers: VGG19 layers compared with the content image.
        style_layers: VGG19 layers whose Gram matrices are compared with the style image(s).
        style_layer_weights: One weight per style layer; ``None`` means ``1 / len(style_layers)``.
        normalization: ``"seed"`` (raw sums, as the tutorial) or ``"invariant"`` (Gram divided by
            C·H·W, means instead of sums; behaves the same at 128 px and 1024 px).
        style_scale: Size of the style image(s) relative to the output, by area (1.0 = same
            number of pixels as the output, aspect ratio kept).
        preserve_colors: Keep the content image's colours: only the luminance is transferred.
        init: Starting image: ``"content"`` (seed), ``"noise"`` or ``"image"`` (given by caller).
        seed: Seed of the noise init; with it, runs on CPU are reproducible.
    """

    size: int | tuple[int, int] = 512
    iterations: int = 100
    content_weight: float = 0.025
    style_weight: float = 1.0
    tv_weight: float = 1.0
    tv_power: float = 1.25
    content_layers: tuple[str, ...] = SEED_CONTENT_LAYERS
    style_layers: tuple[str, ...] = SEED_STYLE_LAYERS
    style_layer_weights: tuple[float, ...] | None = None
    normalization: Normalization = "seed"
    style_scale: float = 1.0
    preserve_colors: bool = False
    init: Init = "content"
    seed: int | None = None

    def __post_init__(self) -> None:
        """Validate every field; raise :class:`InvalidJob` naming the first bad one."""
        self._check()

    # -- (de)serialization -------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Any, prefix: str = "params") -> Params:
        """Build from a JSON object, rejecting unknown fields, wrong types and bad values.

        Args:
            data: The decoded JSON object (``None`` means all defaults).
            prefix: Name of the object in error messages, e.g. ``"params"``.

        Raises:
            InvalidJob: naming the offending field.
        """
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise InvalidJob(prefix, f"must be an object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidJob(f"{prefix}.{unknown[0]}", f"unknown option (known: {', '.join(sorted(known))})")
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            kwargs[name] = _coerce(f"{prefix}.{name}", name, value)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (tuples become lists) that :meth:`from_dict` accepts."""
        values = ((f.name, getattr(self, f.name)) for f in fields(self))
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values}

    def replace(self, **changes: Any) -> Params:
        """Return a copy with some fields changed (validated again)."""
        data = self.to_dict()
        data.update(changes)
        return Params.from_dict(data)

    # -- validation ----------------------------------------------------------------------------

    def _check(self) -> None:
        size = self.size
        sides = (size,) if isinstance(size, int) else tuple(size)
        if len(sides) not in (1, 2) or not all(isinstance(s, int) and not isinstance(s, bool) for s in sides):
            raise InvalidJob("params.size", "must be an integer or a [height, width] pair of integers")
        for s in sides:
            if not MIN_SIZE_PX <= s <= MAX_SIZE_PX:
                raise InvalidJob("params.size", f"{s} px is out of range [{MIN_SIZE_PX}, {MAX_SIZE_PX}]")
        if not 1 <= self.iterations <= MAX_ITERATIONS:
            raise InvalidJob("params.iterations", f"{self.iterations} is out of range [1, {MAX_ITERATIONS}]")
        for name in ("content_weight", "style_weight", "tv_weight"):
            _finite_at_least(f"params.{name}", getattr(self, name), 0.0)
        _finite_at_least("params.tv_power", self.tv_power, 1.0)
        _finite_at_least("params.style_scale", self.style_scale, 0.01)
        if self.style_scale > 10:
            raise InvalidJob("params.style_scale", f"{self.style_scale} is out of range [0.01, 10]")
        for name in ("content_layers", "style_layers"):
            layers = getattr(self, name)
            if not layers:
                raise InvalidJob(f"params.{name}", "must name at least one layer")
            if len(set(layers)) != len(layers):
                raise InvalidJob(f"params.{name}", "names a layer more than once")
            for layer in layers:
                if layer not in VGG19_CONV_LAYERS:
                    raise InvalidJob(f"params.{name}", f"{layer!r} is not a VGG19 conv layer")
        if self.style_layer_weights is not None:
            if len(self.style_layer_weights) != len(self.style_layers):
                raise InvalidJob("params.style_layer_weights", "needs one weight per style layer")
            for w in self.style_layer_weights:
                _finite_at_least("params.style_layer_weights", w, 0.0)
        if self.normalization not in ("seed", "invariant"):
            raise InvalidJob("params.normalization", f"{self.normalization!r} is not 'seed' or 'invariant'")
        if self.init not in ("content", "noise", "image"):
            raise InvalidJob("params.init", f"{self.init!r} is not 'content', 'noise' or 'image'")
        if self.seed is not None and not 0 <= self.seed < 2**32:
            raise InvalidJob("params.seed", f"{self.seed} is out of range [0, 2**32)")

    @property
    def layer_weights(self) -> tuple[float, ...]:
        """Per-style-layer weights, defaulting to ``1 / len(style_layers)`` each (the seed)."""
        if self.style_layer_weights is not None:
            return self.style_layer_weights
        return tuple(1.0 / len(self.style_layers) for _ in self.style_layers)


def _finite_at_least(name: str, value: float, low: float) -> None:
    if not math.isfinite(value) or value < low:
        raise InvalidJob(name, f"{value} must be a finite number >= {low}")


_TYPES: dict[str, str] = {
    "iterations": "int",
    "seed": "int?",
    "content_weight": "float",
    "style_weight": "float",
    "tv_weight": "float",
    "tv_power": "float",
    "style_scale": "float",
    "content_layers": "strs",
    "style_layers": "strs",
    "style_layer_weights": "floats?",
    "normalization": "str",
    "init": "str",
    "preserve_colors": "bool",
    "size": "size",
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return _is_int(v) or isinstance(v, float)


def _coerce(path: str, name: str, value: Any) -> Any:
    """Check one JSON value's type and convert lists to tuples; raise InvalidJob on a mismatch."""
    kind = _TYPES[name]
    if kind.endswith("?"):
        if value is None:
            return None
        kind = kind[:-1]
    ok: bool
    if kind == "int":
        ok = _is_int(value)
    elif kind == "float":
        ok = _is_num(value)
        value = float(value) if ok else value
    elif kind == "str":
        ok = isinstance(value, str)
    elif kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "strs":
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    elif kind == "floats":
        ok = isinstance(value, (list, tuple)) and all(_is_num(v) for v in value)
        value = tuple(float(v) for v in value) if ok else value
    else:  # size: int or [h, w]
        ok = _is_int(value) or (isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_int(v) for v in value))
        value = tuple(value) if ok and not _is_int(value) else value
    if not ok:
        expected = {
            "int": "an integer",
            "float": "a number",
            "str": "a string",
            "bool": "true or false",
            "strs": "a list of strings",
            "floats": "a list of numbers",
            "size": "an integer or a [height, width] pair",
        }[kind]
        raise InvalidJob(path, f"must be {expected}, got {type(value).__name__} {value!r}"[:200])
    return value
