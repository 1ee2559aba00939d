"""What the benchmarks run on.

The ImageNet VGG19 weights and the photos in ../shared when they are there, else seeded random
weights and images (the same code paths, meaningless pictures). ``STYLEQUEUE_SHARED`` names
another folder for ../shared (a git worktree outside the checkout's parent).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

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
