"""How much memory a job needs, and how much this worker can give one: refuse before, never OOM after.

A job too large for its worker would be killed by the OOM killer mid-run, redelivered, and
killed again until the crash cap fails it, an hour of GPU time later. Instead the worker
estimates the job's peak memory from its sizes before any download and refuses a job that cannot
fit with an :class:`~producer.core.errors.InvalidJob` naming ``params.size``.

The estimate follows the network: the float32 activations of every VGG19 layer up to the deepest
layer a loss uses (channels at that layer's resolution), kept for the backward pass, times a
factor for gradients and workspace, plus scipy's L-BFGS state (float64, ``params.lbfgs_memory``
correction pairs of the image's size), plus, for regional styles, each region's masks and the
masked copies of the style layers' features. A job evaluated in tiles (:mod:`worker.nst.tiling`) needs
the network's memory for one crop only. The factor was measured with the ImageNet weights on the CPU engine:
peak RSS grows by 4.4-5.5 KB per output pixel at 128²-768² (``python benchmarks/memory.py``),
and this estimate gives 5.1 KB per pixel for the default layers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from producer.core.params import VGG19_CONV_LAYERS, Params

log = logging.getLogger(__name__)

#: Output channels of each VGG19 conv layer, in order.
CHANNELS = dict(zip(VGG19_CONV_LAYERS, [64] * 2 + [128] * 2 + [256] * 4 + [512] * 8))
#: Backward pass and workspace over the forward activations (measured, see the module docstring).
BACKWARD_FACTOR = 3.5


def activation_bytes_per_pixel(layers: Sequence[str]) -> float:
    """Float32 bytes of VGG19 activations per input pixel, up to the deepest of ``layers``."""
    deepest = max(VGG19_CONV_LAYERS.index(layer) for layer in layers)
    total = 0.0
    for name in VGG19_CONV_LAYERS[: deepest + 1]:
        block = int(name[len("block")])
        total += CHANNELS[name] / 4 ** (block - 1)  # each pooling quarters the pixels
        if (name.endswith("conv2") and block <= 2) or name.endswith("conv4"):
            total += CHANNELS[name] / 4**block  # the block's pooling output
    return total * 4


def style_activation_bytes_per_pixel(params: Params) -> float:
    """Float32 bytes per input pixel of the style layers' outputs alone."""
    return sum(CHANNELS[name] / 4 ** (int(name[len("block")]) - 1) for name in params.style_layers) * 4


def region_bytes_per_pixel(params: Params) -> float:
    """What one region of a regional-style job adds to the network per pixel of its input.

    The masked copies of every style layer's features (F·√m and F·m) and their gradients.
    """
    return 4 * style_activation_bytes_per_pixel(params)


def mask_bytes_per_pixel(params: Params) -> float:
    """What one region's masks take per output pixel, tiled or not.

    Float32 at the level and at every style layer, and the tiles' copies of the latter.
    """
    return 4 * (1 + 2 * sum(4.0 ** -(int(name[len("block")]) - 1) for name in params.style_layers))


def lbfgs_bytes_per_pixel(params: Params) -> int:
    """Scipy L-BFGS-B's float64 state per output pixel: 2·m + 4 vectors of 3 values a pixel."""
    return (2 * params.lbfgs_memory + 4) * 3 * 8


def _layers(params: Params) -> tuple[str, ...]:
    return tuple(params.content_layers) + tuple(params.style_layers)


def network_bytes(params: Params, pixels: float, regions: int = 0) -> float:
    """Forward and backward through VGG19 for an input of ``pixels`` pixels (``regions``: masks)."""
    per_pixel = activation_bytes_per_pixel(_layers(params)) * BACKWARD_FACTOR + regions * region_bytes_per_pixel(params)
    return pixels * per_pixel


def crop_pixels(tile: int, halo: int) -> int:
    """Pixels of the largest crop a tile of ``tile`` px is evaluated in (the core and its halo)."""
    return (tile + 2 * halo) ** 2


def estimate_bytes(params: Params, pixels: int, limit_bytes: int = 0, halo: int = 0, regions: int = 0) -> int:
    """Peak memory of one job with ``pixels`` output pixels (its style images at ``style_scale``).

    The network's share is a crop's when the job runs tiled (``params.tile``, or automatically when
    the whole image would not fit ``limit_bytes``; ``halo`` is the tiles' halo in px); what stays
    proportional to the image is the L-BFGS state and the image itself. ``regions``: the distinct
    style masks of a regional-style job (0 without).
    """
    host = pixels * (lbfgs_bytes_per_pixel(params) + regions * mask_bytes_per_pixel(params))
    whole = network_bytes(params, pixels, regions)
    style_pixels = pixels * params.style_scale**2
    style = style_pixels * activation_bytes_per_pixel(_layers(params))  # forward only, before the optimization
    tile = params.tile
    if tile is None and limit_bytes:
        side = int(pixels**0.5)
        tile = auto_tile(params, (side, side), limit_bytes, halo, regions) or None
    if tile:
        crop = crop_pixels(tile, halo)
        whole = min(whole, network_bytes(params, crop, regions))
        style = min(style, crop * activation_bytes_per_pixel(_layers(params)))
    return int(max(host + whole, style))


def auto_tile(params: Params, size: tuple[int, int], limit_bytes: int, halo: int, regions: int = 0) -> int:
    """The tile for ``params.tile=None``.

    0 (whole) when the evaluation fits ``limit_bytes`` (or no limit is known, or tiles would not
    be smaller than the image with their halo), else the largest tile (a multiple of 16 px, at
    least 64) whose crop fits what the image's own arrays leave.
    """
    height, width = size
    pixels = height * width
    host = pixels * (lbfgs_bytes_per_pixel(params) + regions * mask_bytes_per_pixel(params))
    if not limit_bytes or host + network_bytes(params, pixels, regions) <= limit_bytes:
        return 0
    free = max(limit_bytes - host, 0)
    side = (free / network_bytes(params, 1, regions)) ** 0.5 - 2 * halo
    tile = max(64, int(side) // 16 * 16)
    if tile >= max(height, width) or crop_pixels(tile, halo) >= pixels:
        return 0  # the halo would make a crop as large as the image: tiles would not help
    return tile
