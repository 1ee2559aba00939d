"""Shared fixtures: seeded random VGG19 weights saved to a file, and generated test images."""

from __future__ import annotations

import io
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from PIL import Image


def png_bytes(arr: np.ndarray, mode: str | None = None, fmt: str = "PNG", **save: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format=fmt, **save)
    return buf.getvalue()


def random_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random colour image (noise blurred by upsampling), uint8."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A VGG19 (no top) Keras weights file with seeded random weights, loaded like real ones."""
    from worker import vgg

    return vgg.save_random_weights(tmp_path_factory.mktemp("weights") / "vgg19_random.weights.h5", seed=1)


@pytest.fixture(scope="session")
def engine(weights_file: str):  # type: ignore[no-untyped-def]
    from worker.engine import Engine

    return Engine(weights=weights_file)


@pytest.fixture
def content() -> np.ndarray:
    return random_rgb(48, 64, seed=1)


@pytest.fixture
def style() -> np.ndarray:
    return random_rgb(40, 40, seed=2)
