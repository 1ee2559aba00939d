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

from producer.core.digest import sha256_file
from producer.core.errors import ConfigError, WeightsError
from producer.core.params import VGG19_CONV_LAYERS

log = logging.getLogger(__name__)

#: ImageNet channel means in BGR order: Keras' "caffe" preprocessing for VGG.
BGR_MEAN = (103.939, 116.779, 123.68)

_lock = threading.Lock()
_bases: dict[tuple[str, str | None, str, str], object] = {}
_cut: dict[tuple[str, str | None, str, str, tuple[str, ...]], object] = {}


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
    _check_layout_matches_name(path)
    return str(path)


def _check_layout_matches_name(path: Path) -> None:
    """Refuse an HDF5 weights file whose name makes Keras pick the wrong reader.

    Keras chooses the reader from the file name alone: ``*.weights.h5`` is read as a Keras 3
    weights file (groups ``layers``/``vars``), any other ``*.h5`` as a legacy (Keras 2, tf.keras)
    one (``layer_names`` attribute). A file under the other name fails deep inside Keras with
    "Layer count mismatch ... found 0 saved layers"; this says what to rename instead.
    """
    if path.suffix != ".h5":
        return  # .keras archives and the like: Keras' own checks
    import h5py

    try:
        with h5py.File(path, "r") as f:
            keras3 = "layers" in f and "layer_names" not in f.attrs
            legacy = "layer_names" in f.attrs or "model_weights" in f
    except OSError as e:
        raise WeightsError(f"VGG19 weights file {str(path)!r} is not an HDF5 file ({e})") from None
    named_keras3 = path.name.endswith(".weights.h5")
    if keras3 and not named_keras3:
        raise WeightsError(
            f"VGG19 weights file {str(path)!r} is a Keras 3 weights file, but Keras reads a name ending in plain "
            "'.h5' as the legacy format; name the file (or the S3 object STYLEQUEUE_WEIGHTS points at) with "
            f"'.weights.h5', e.g. {path.name[:-3]}.weights.h5"
        )
    if legacy and named_keras3:
        raise WeightsError(
            f"VGG19 weights file {str(path)!r} is a legacy (Keras 2 / tf.keras) HDF5 weights file, but Keras reads "
            "a name ending in '.weights.h5' as the Keras 3 format; name the file (or the S3 object) with plain "
            f"'.h5', e.g. {path.name[: -len('.weights.h5')]}.h5"
        )


def _build_base(weights: str, precision: str, device: str = "") -> object:
    import keras
    import tensorflow as tf

    try:
        # The dtype policy applies to layers as they are built: under mixed_bfloat16 the convolutions
        # compute in bfloat16 while their variables (the loaded weights) stay float32.
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
        try:
            with tf.device(device):
                return keras.applications.VGG19(include_top=False, weights=weights, input_shape=(None, None, 3))
        finally:
            keras.mixed_precision.set_global_policy(previous)
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


def feature_model(
    weights: str, layers: Sequence[str], sha256: str | None = None, precision: str = "float32", device: str = ""
) -> object:
    """Return a Keras model mapping a preprocessed ``(N, H, W, 3)`` batch to ``layers``' outputs.

    The VGG19 base is built and its weights loaded once per process, weights source and precision;
    models for different layer sets share its variables. Each returned model ends at the deepest
    layer used. A ``bfloat16`` model computes its convolutions in bfloat16 and returns bfloat16
    features (cast them to float32 before any loss).

    Args:
        weights: ``"imagenet"`` or a path to a Keras weights file for ``VGG19(include_top=False)``.
        layers: Conv layer names, outputs in this order (duplicates allowed).
        sha256: Expected hex sha256 of the weights file, or ``None`` to skip the check.
        precision: ``float32`` or ``bfloat16`` (see :func:`resolve_precision`).
        device: Where its weights live (``/GPU:1``; default: TensorFlow's choice): one copy per
            device that evaluates tiles.

    Raises:
        WeightsError: weights missing, unreadable, or failing the sha256 check.
    """
    import keras

    key = (weights, sha256, precision, device)
    layers = tuple(layers)
    with _lock:
        cut_key = (weights, sha256, precision, device, layers)
        if cut_key in _cut:
            return _cut[cut_key]
        if key not in _bases:
            source = _resolve(weights, sha256)
            start = time.perf_counter()
            _bases[key] = _build_base(source, precision, device)
            log.info("loaded VGG19 weights %s (%s) in %.2f s", source, precision, time.perf_counter() - start)
        base = _bases[key]
        outputs = [base.get_layer(name).output for name in layers]  # type: ignore[attr-defined]
        # A functional model holds only the layers between its inputs and outputs: this is the cut.
        model = keras.Model(base.input, outputs, name="vgg19_features")  # type: ignore[attr-defined]
        _cut[cut_key] = model
        return model


#: Environment variable that overrides what ``auto`` resolves to (``float32`` or ``bfloat16``).
AUTO_PRECISION_ENV = "STYLEQUEUE_AUTO_PRECISION"


def resolve_precision(requested: str) -> str:
    """``float32`` or ``bfloat16``: ``auto`` is bfloat16 only where the hardware runs it natively.

    That is a GPU of compute capability 8.0 or newer (Ampere, Hopper: bfloat16 tensor cores), or a
    CPU with AVX512_BF16 or AMX-BF16; elsewhere bfloat16 is emulated and several times slower than
    float32 (measured: 11x on an AVX2-only CPU), so ``auto`` keeps float32.

    ``STYLEQUEUE_AUTO_PRECISION=bfloat16`` (or ``float32``) makes ``auto`` resolve as it would on a
    machine with (or without) native bfloat16, whatever this one has: CI uses it so a machine
    without AVX512_BF16 runs what ``auto`` means on one that has it. Results are the same; only
    the speed differs (bfloat16 is emulated where it is not native).

    Raises:
        ConfigError: ``STYLEQUEUE_AUTO_PRECISION`` is set to something else.
    """
    if requested != "auto":
        return requested
    forced = os.environ.get(AUTO_PRECISION_ENV, "").strip()
    if forced:
        if forced not in ("float32", "bfloat16"):
            raise ConfigError(AUTO_PRECISION_ENV, f"{forced!r} must be 'float32' or 'bfloat16' (or unset: detect)")
        return forced
    return "bfloat16" if native_bfloat16() else "float32"


def native_bfloat16() -> bool:
    """Whether this process's device computes bfloat16 natively (see :func:`resolve_precision`)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability") or (0, 0)
        return tuple(capability) >= (8, 0)
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


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
