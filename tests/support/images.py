"""Test images made in memory: encoded bytes and seeded random arrays."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image


def png_bytes(arr: np.ndarray, mode: str | None = None, fmt: str = "PNG", **save: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format=fmt, **save)
    return buf.getvalue()


def random_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random colour image (noise blurred by upsampling), uint8."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))
