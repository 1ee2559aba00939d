"""What the benchmarks run on.

The ImageNet VGG19 weights and the photos in ../shared (or ``$STYLEQUEUE_SHARED``, for a
checkout elsewhere) when they are there, else seeded random weights and images (the same code
paths, meaningless pictures).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

#: The recommended weights of ``normalization: invariant`` (docs/engine.md, "Two normalizations"):
#: about the seed's balance of content, style and smoothness at 256 px, at any size.
INVARIANT = {"normalization": "invariant", "content_weight": 1.0, "style_weight": 200.0, "tv_weight": 50.0}
SHARED = Path(os.environ.get("STYLEQUEUE_SHARED") or Path(__file__).resolve().parents[2] / "shared")
IMAGENET = SHARED / "vgg19" / "vgg19_imagenet_notop.weights.h5"


def weights(given: str | None = None) -> str:
    """``given``, else the ImageNet weights from ../shared, else a file of seeded random weights."""
    if given:
        return given
    if IMAGENET.exists():
        return str(IMAGENET)
    from worker.nst import vgg

    return vgg.save_random_weights(Path(tempfile.mkdtemp()) / "random.weights.h5")


def pair(content: str = "tubingen.jpg", style: str = "starry_night.jpg") -> tuple[np.ndarray, np.ndarray]:
    """Content and style photos from ../shared/images, else two seeded random 512x384 images."""
    from worker.nst import images

    if (SHARED / "images" / content).exists():
        return (
            images.load((SHARED / "images" / content).read_bytes()),
            images.load((SHARED / "images" / style).read_bytes()),
        )
    rng = np.random.default_rng(0)
    first = rng.integers(0, 256, (384, 512, 3), dtype=np.uint8)
    return first, rng.integers(0, 256, (384, 512, 3), dtype=np.uint8)
