"""VGG19 feature extractor: weights resolution, loading once per process, cutting after the last layer.

Weights are either ``"imagenet"`` (Keras downloads and caches them) or a path to a Keras weights
file for ``VGG19(include_top=False)``, optionally checked against a sha256. The full convolutional
base is loaded once per process and per weights source; each distinct set of loss layers gets a
model cut after the deepest layer it uses, sharing the same weight variables.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from producer.errors import WeightsError
from producer.params import VGG19_CONV_LAYERS
from producer.storage import sha256_file

log = logging.getLogger(__name__)

#: ImageNet channel means in BGR order: Keras' "caffe" preprocessing for VGG.
BGR_MEAN = (103.939, 116.779, 123.68)

_lock = threading.Lock()
_bases: dict[tuple[str, str | None], object] = {}
_cut: dict[tuple[str, str | None, tuple[str, ...]], object] = {}


def _resolve(weights: str, sha256: str | None) -> str:
    """Check a weights source and return what to hand to Keras."""
    if weights == "imagenet":
        return weights
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"VGG19 weights file {str(path)!r} does not exist; give a Keras weights file for "
            "VGG19(include_top=False) (e.g. vgg19_imagenet_notop.weights.h5) or 'imagenet'"
        )
    if sha256 is not None:
        actual = sha256_file(path)
        if actual.lower() != sha256.lower():
            raise WeightsError(f"VGG19 weights {str(path)!r} have sha256 {actual}, expected {sha256}")
    return str(path)


def _build_base(weights: str) -> object:
    import keras

    try:
        return keras.applications.VGG19(include_top=False, weights=weights, input_shape=(None, None, 3))
    except WeightsError:
        raise
    except Exception as e:
        if weights == "imagenet":
            raise WeightsError(
                f"could not download the ImageNet VGG19 weights ({type(e).__name__}: {e}); without "
                "network access, point at a local file: --weights PATH or STYLEQUEUE_WEIGHTS=PATH "
                "(a Keras weights file for VGG19(include_top=False))"
            ) from None
        raise WeightsError(f"could not load VGG19 weights from {weights!r}: {type(e).__name__}: {e}") from None


def feature_model(weights: str, layers: Sequence[str], sha256: str | None = None) -> object:
    """Return a Keras model mapping a preprocessed ``(N, H, W, 3)`` batch to ``layers``' outputs.

    The VGG19 base is built and its weights loaded once per process and weights source; models for
    different layer sets share its variables. Each returned model ends at the deepest layer used.

    Args:
        weights: ``"imagenet"`` or a path to a Keras weights file for ``VGG19(include_top=False)``.
        layers: Conv layer names, outputs in this order (duplicates allowed).
        sha256: Expected hex sha256 of the weights file, or ``None`` to skip the check.

    Raises:
        WeightsError: weights missing, unreadable, or failing the sha256 check.
    """
    import keras

    key = (weights, sha256)
    layers = tuple(layers)
    with _lock:
        if (weights, sha256, layers) in _cut:
            return _cut[(weights, sha256, layers)]
        if key not in _bases:
            source = _resolve(weights, sha256)
            start = time.perf_counter()
            _bases[key] = _build_base(source)
            log.info("loaded VGG19 weights %s in %.2f s", source, time.perf_counter() - start)
        base = _bases[key]
        outputs = [base.get_layer(name).output for name in layers]  # type: ignore[attr-defined]
        # A functional model holds only the layers between its inputs and outputs: this is the cut.
        model = keras.Model(base.input, outputs, name="vgg19_features")  # type: ignore[attr-defined]
        _cut[(weights, sha256, layers)] = model
        return model


def deepest(layers: Sequence[str]) -> str:
    """Return the layer among ``layers`` that comes last in VGG19."""
    return max(layers, key=VGG19_CONV_LAYERS.index)


def min_side_px(layers: Sequence[str]) -> int:
    """Smallest input side (pixels) that still gives a >= 1 px feature map at every layer."""
    block = int(deepest(layers)[len("block")])
    return 2 ** (block - 1)


def save_random_weights(path: str | os.PathLike[str], seed: int = 0) -> str:
    """Write a VGG19 (no top) weights file with seeded random weights; return its path.

    Used by tests and demos where the ImageNet weights are not at hand: the file loads through
    exactly the same code as real weights. ``path`` must end in ``.weights.h5``.
    """
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.applications.VGG19(include_top=False, weights=None, input_shape=(None, None, 3))
    model.save_weights(str(path))
    return str(path)
