"""Regional styles: each style applies where its mask is white (Gatys et al. 2017, spatial control).

A job's styles may each carry a grayscale mask over the output (soft values allowed). The
styles that share one mask (the same object; no mask counts as all white) form a **region**: their
statistics are blended by their weights, as an unmasked job blends all of its styles. For every
style layer, each region's term compares the style statistics of the generated features *weighted
by the region's mask at that layer's resolution* with the region's style:

* the mask is resized to the level's size, then averaged over each layer's s×s input pixels per
  feature pixel (s = 1, 2, 4, 8, 16): a block mean, local, so a tile's share is its crop (exact
  tiles stay exact);
* where the masks of several regions add up to more than 1 at a pixel they are divided by their
  sum there (two white masks share the pixel half and half);
* the weighted statistics are normalised by the mask's weight (Σm): the region's per-pixel Gram
  matrix (means, covariances), compared exactly as the unmasked term compares the whole image's;
* the term is weighted by the region's share of the layer (Σm / H_l·W_l) and by the region's
  part of the blend weights (1 each when the weights are equal).

So a single style with an all-white mask has exactly the unmasked objective, an all-black mask
removes its region's term, and a split mask gives each half its own style. Masks must have the
content's aspect ratio (within :data:`ASPECT_TOLERANCE`); masks black everywhere are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from producer.core.errors import ImageError

#: Largest relative difference between a mask's aspect ratio (width / height) and the content's.
ASPECT_TOLERANCE = 0.05


@dataclass(frozen=True)
class Region:
    """The styles that share one mask.

    Attributes:
        styles: Indices of its style images.
        blend: Their blend weights within the region (sum 1).
        weight: The region's weight: its styles' share of the job's blend weights times the number
            of regions (1 for each region when the weights are equal).
        mask: ``(H, W)`` float32 in [0, 1] at the mask's own size; ``None``: all white.
    """

    styles: tuple[int, ...]
    blend: tuple[float, ...]
    weight: float
    mask: np.ndarray | None


def regions(blend: Sequence[float], masks: Sequence[np.ndarray | None] | None) -> list[Region] | None:
    """The regions of a job's styles, or ``None`` when no style has a mask (the unmasked objective).

    Args:
        blend: The styles' blend weights, normalised to sum 1.
        masks: One mask per style (``None``: no mask), styles sharing a mask passing the same array.
    """
    if masks is None or all(m is None for m in masks):
        return None
    if len(masks) != len(blend):
        raise ImageError(f"style masks: {len(masks)} masks for {len(blend)} style images (one per style, in order)")
    groups: dict[int, list[int]] = {}
    by_key: dict[int, np.ndarray | None] = {}
    for i, m in enumerate(masks):
        key = -1 if m is None else id(m)
        groups.setdefault(key, []).append(i)
        by_key[key] = m
    totals = {key: sum(blend[i] for i in members) for key, members in groups.items()}
    weighed = [key for key, total in totals.items() if total > 0]  # styles of weight 0 have no term
    out = []
    for key in weighed:
        members, total = groups[key], totals[key]
        inner = tuple(blend[i] / total for i in members)
        out.append(Region(tuple(members), inner, total * len(weighed), by_key[key]))
    return out


def check(mask: np.ndarray, content_hw: tuple[int, int], name: str) -> None:
    """Refuse a mask whose aspect ratio is not the content's (within :data:`ASPECT_TOLERANCE`).

    Raises:
        ImageError: naming the mask and both shapes.
    """
    if mask.ndim != 2 or 0 in mask.shape:
        raise ImageError(f"{name}: expected an (H, W) grayscale mask, got shape {mask.shape}")
    if not np.issubdtype(mask.dtype, np.floating) or not np.all(np.isfinite(mask)):
        raise ImageError(f"{name}: expected finite floats in [0, 1] (white 1), got {mask.dtype}")
    if mask.min() < 0 or mask.max() > 1:
        raise ImageError(f"{name}: values from {mask.min():g} to {mask.max():g}: a mask's are in [0, 1] (white 1)")
    ch, cw = content_hw
    mh, mw = mask.shape
    ratio = (mw / mh) / (cw / ch)
    if abs(ratio - 1) > ASPECT_TOLERANCE:
        raise ImageError(
            f"{name}: {mw}x{mh} px does not have the content image's aspect ratio ({cw}x{ch} px; "
            f"a mask covers the output, so their width/height ratios must agree within {ASPECT_TOLERANCE:.0%})"
        )


def at_level(found: Sequence[Region], size: tuple[int, int]) -> list[np.ndarray]:
    """Each region's mask at a level's ``(height, width)``, overlaps shared out (sum ≤ 1 a pixel).

    Raises:
        ImageError: the masks are black everywhere (no style would apply).
    """
    resized = [np.ones(size, np.float32) if r.mask is None else np.clip(resize(r.mask, size), 0.0, 1.0) for r in found]
    total = np.sum(resized, axis=0)
    if not np.any(total > 0):
        raise ImageError("style masks: every mask is black everywhere, so no style would apply anywhere")
    scale = np.maximum(total, 1.0)
    return [(m / scale).astype(np.float32) for m in resized]


def resize(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A float mask resized to ``(height, width)`` (bilinear, area-averaged when shrinking)."""
    if mask.shape == size:
        return mask.astype(np.float32)
    img = Image.fromarray(np.asarray(mask, np.float32), mode="F")
    return np.asarray(img.resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=2.0), np.float32)


def at_layer(mask: np.ndarray, scale: int) -> np.ndarray:
    """A level's mask at a layer of ``scale`` input px per feature px: the mean of each s×s block.

    VGG19's poolings floor (a 33 px side gives 16 at scale 2), so the rows and columns past the
    last whole block are dropped, as the network drops them.
    """
    h, w = mask.shape[0] // scale, mask.shape[1] // scale
    blocks = np.asarray(mask[: h * scale, : w * scale], np.float64).reshape(h, scale, w, scale)
    return blocks.mean(axis=(1, 3)).astype(np.float32)


def share(layer_mask: np.ndarray) -> float:
    """A region's share of a layer: Σm / (H_l·W_l)."""
    return float(np.mean(layer_mask, dtype=np.float64))
