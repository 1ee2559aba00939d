"""Exact tiled evaluation: the loss and gradient of an image of any size, a tile at a time.

Cutting an image into tiles and stylizing them one by one shifts the style from tile to tile:
each tile matches the style's statistics on its own. Here nothing is approximated (as in
Galerne et al., "Scaling painting style transfer"): the loss is the loss of the whole image and
the gradient its exact gradient, computed in two passes over overlapping tiles.

* **Halo.** A feature near a tile's edge depends on pixels outside the tile. Each tile's *core*
  (the tiles' cores partition the image) is evaluated inside a *crop* grown by a halo as wide as
  the receptive field of the deepest layer used (:func:`halo_px`: 96 px for ``block5_conv2``);
  the features of the core are then exactly the whole image's. Tiles and halos are multiples of
  the network's pooling stride (16 px up to block 5), so the pooling windows line up, and a crop
  that reaches the image's border sees the same zero padding as the whole image.
* **Pass 1** runs the network forward on each crop and sums, over the cores, every statistic the
  loss needs: the style layers' raw Gram matrices (and per-channel sums for ``mean_std`` and ``w2``,
  whose covariance is Gram/N − μμᵀ: W2 is a function of these sums too) and the
  content layers' squared differences. These are sums over positions, so the whole image's are
  the sums of its tiles'. The loss follows from them exactly, and so do its derivatives with
  respect to them (a few small matrices).
* **Pass 2** runs forward and backward on each crop with the surrogate
  ``Σ ⟨∂L/∂stats, stats_of_core(x)⟩``, whose gradient is the crop's exact share of the whole
  gradient; the crops' gradients are added where they overlap.
* The total variation is computed on the whole image at once (it needs no network).

Memory for the network is set by the crop, not the image; what still grows with the image is the
image itself, its gradient and the L-BFGS state (``params.lbfgs_memory``). The tiles of one image
are spread over every device given (several GPUs of one worker, or logical CPU devices), one
thread per device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from producer.core.params import CHANNELS, VGG19_CONV_LAYERS
from worker.nst import losses


def scale_of(layer: str) -> int:
    """Input pixels per feature pixel at ``layer`` (1, 2, 4, 8 or 16)."""
    return 2 ** (int(layer[len("block")]) - 1)


def alignment(layers: Sequence[str]) -> int:
    """The pooling stride up to the deepest of ``layers``: tiles and halos are multiples of it."""
    return max(scale_of(layer) for layer in layers)


def halo_px(layers: Sequence[str]) -> int:
    """Input pixels a tile's crop must extend past its core for ``layers``' features to be exact.

    Walks VGG19: each 3×3 convolution lets a wrong border (the crop's zero padding where the image
    has pixels) reach one more feature pixel inward; each 2×2 pooling halves that width (rounding
    up). The deepest layer's width, in input pixels, rounded up to the alignment.
    """
    deepest = max(VGG19_CONV_LAYERS.index(layer) for layer in layers)
    width, scale, block, worst = 0, 1, 1, 0
    for name in VGG19_CONV_LAYERS[: deepest + 1]:
        b = int(name[len("block")])
        if b != block:  # a pooling between blocks
            width, scale, block = math.ceil(width / 2), scale * 2, b
        width += 1
        if name in layers:
            worst = max(worst, width * scale)
    step = alignment(layers)
    return math.ceil(worst / step) * step


@dataclass(frozen=True)
class Tile:
    """One tile: its core (the tiles' cores partition the image) and the crop evaluated for it.

    Attributes:
        core: ``(top, bottom, left, right)`` in image pixels.
        crop: The core grown by the halo, clipped to the image.
    """

    core: tuple[int, int, int, int]
    crop: tuple[int, int, int, int]

    @property
    def box(self) -> tuple[int, int, int, int]:
        """The core relative to the crop."""
        (top, bottom, left, right), (crop_top, _, crop_left, _) = self.core, self.crop
        return top - crop_top, bottom - crop_top, left - crop_left, right - crop_left

    @property
    def window(self) -> tuple[slice, slice, slice, slice]:
        """Index of the crop in a ``(1, H, W, C)`` array."""
        top, bottom, left, right = self.crop
        return slice(None), slice(top, bottom), slice(left, right), slice(None)


def grid(height: int, width: int, tile: int, layers: Sequence[str]) -> list[Tile]:
    """The tiles of a ``height × width`` image, cores of ``tile`` px (rounded down to the alignment)."""
    step = alignment(layers)
    core = max(step, tile // step * step)
    halo = halo_px(layers)
    tiles = []
    for top in range(0, height, core):
        for left in range(0, width, core):
            bottom, right = min(height, top + core), min(width, left + core)
            crop = (max(0, top - halo), min(height, bottom + halo), max(0, left - halo), min(width, right + halo))
            tiles.append(Tile((top, bottom, left, right), crop))
    return tiles


def _core(features: tf.Tensor, box: tf.Tensor, scale: int) -> tf.Tensor:
    """The part of a crop's feature map that belongs to the core ``box`` (image px, crop-relative)."""
    return features[:, box[0] // scale : box[1] // scale, box[2] // scale : box[3] // scale, :]


class TiledObjective:
    """The loss and gradient of one level, evaluated in tiles over one or more devices.

    Args:
        models: ``(device, feature model)`` pairs; tiles go round-robin over them.
        content_layers: The content layers (the models' first outputs).
        style_layers: The style layers (the models' remaining outputs).
        content_targets: Each content layer's feature map of the whole content image.
        style_targets: Each style layer's statistics.
        weights: ``(content, style, tv)`` weights.
        layer_weights: The style layers' weights.
        tv_power: The total variation's exponent.
        invariant: The size-invariant normalization.
        style_loss: ``params.style_loss``: ``gram``, ``mean_std`` or ``w2``.
        shape: ``(1, H, W, 3)`` of the image.
        tile: Core size in px.
        compiled: Cache of the compiled per-device functions (shared by the objectives of one engine).
        masks: Regional styles' masks at each term's layer (``(H_l, W_l)``, region-major, as
            :func:`worker.nst.losses.style_stats` takes them); empty without regions. Each tile
            takes its core's part: the masked sums add up over tiles as the plain ones do.
    """

    def __init__(
        self,
        models: Sequence[tuple[str, Any]],
        content_layers: Sequence[str],
        style_layers: Sequence[str],
        content_targets: Sequence[np.ndarray],
        style_targets: Sequence[losses.StyleTarget],
        weights: tf.Tensor,
        layer_weights: tf.Tensor,
        tv_power: tf.Tensor,
        invariant: bool,
        style_loss: str,
        shape: tuple[int, ...],
        tile: int,
        compiled: dict[Any, Any],
        masks: Sequence[np.ndarray] = (),
    ) -> None:
        self.models = list(models)
        self.content_layers, self.style_layers = list(content_layers), list(style_layers)
        self.content_targets = [np.asarray(t, np.float32) for t in content_targets]
        self.style_targets = list(style_targets)
        self.weights, self.layer_weights, self.tv_power = weights, layer_weights, tv_power
        self.invariant, self.style_loss = invariant, style_loss
        self.sums = losses.needs_sums(style_loss)
        self.shape = shape
        layers = self.content_layers + self.style_layers
        self.tiles = grid(shape[1], shape[2], tile, layers)
        self.image_pixels = tf.constant(float(shape[1] * shape[2]))
        self.counts = [tf.constant(float(np.prod(t.shape))) for t in self.content_targets]
        self.masks = [np.asarray(m, np.float32) for m in masks]
        #: H·W of each style term's layer (what a region's moments are rescaled to).
        self.term_pixels = [
            tf.constant(float((shape[1] // scale_of(layer)) * (shape[2] // scale_of(layer))))
            for layer in self._term_layers()
        ]
        key = (tuple(layers), self.sums, len(self.masks))
        self._fns = [self._functions(device, model, compiled, key) for device, model in self.models]
        # What each tile needs at every evaluation, made once: its core box and content targets.
        self._boxes = [tf.constant(t.box, tf.int32) for t in self.tiles]
        self._content = [self._content_cores(t) for t in self.tiles]
        self._masks = [self._mask_cores(t) for t in self.tiles]
        self._tv = compiled.setdefault(("tv", invariant), _tv_function(invariant))

    def _term_layers(self) -> list[str]:
        """The layer of each style term: the style layers, once per region when there are masks."""
        if not self.masks:
            return list(self.style_layers)
        return [self.style_layers[j % len(self.style_layers)] for j in range(len(self.masks))]

    # -- compiled pieces, per device ------------------------------------------------------------

    def _functions(self, device: str, model: Any, compiled: dict[Any, Any], key: Any) -> tuple[Any, Any]:
        if (device, key) in compiled:
            return compiled[(device, key)]
        n_content = len(self.content_layers)
        scales = [scale_of(layer) for layer in self.content_layers + self.style_layers]
        sums_needed = self.sums
        n_style = len(self.style_layers)

        def core_stats(
            x: tf.Tensor, box: tf.Tensor, content_cores: list[tf.Tensor], masks: list[tf.Tensor]
        ) -> tuple[list[tf.Tensor], list[losses.Moments]]:
            feats = [tf.cast(f, tf.float32) for f in model(x, training=False)]
            cores = [_core(f, box, s) for f, s in zip(feats, scales)]
            sums = [tf.reduce_sum(tf.square(c - t)) for c, t in zip(cores[:n_content], content_cores)]
            styled = cores[n_content:]
            if masks:  # raw masked sums: rescaled once added over the tiles
                return sums, [losses.masked_moments(styled[j % n_style], m, sums_needed) for j, m in enumerate(masks)]
            return sums, [losses.moments(c, sums_needed) for c in styled]

        def gradient(
            x: tf.Tensor,
            box: tf.Tensor,
            content_cores: list[tf.Tensor],
            masks: list[tf.Tensor],
            content_coefs: tf.Tensor,
            d_gram: list[tf.Tensor],
            d_total: list[tf.Tensor],
            d_squares: list[tf.Tensor],
        ) -> tf.Tensor:
            with tf.GradientTape() as tape:
                tape.watch(x)
                sums, moments = core_stats(x, box, content_cores, masks)
                surrogate = tf.add_n([content_coefs[i] * s for i, s in enumerate(sums)] + [tf.constant(0.0)])
                for m, dg, dt, ds in zip(moments, d_gram, d_total, d_squares):
                    surrogate += tf.reduce_sum(dg * m.gram)
                    if sums_needed:
                        surrogate += tf.reduce_sum(dt * m.total) + tf.reduce_sum(ds * m.squares)
            return tape.gradient(surrogate, x)

        # One trace per device and layer set, whatever the crops' shapes.
        channels = [CHANNELS[layer] for layer in self.content_layers + self.style_layers]
        image = tf.TensorSpec((1, None, None, 3), tf.float32)
        box = tf.TensorSpec((4,), tf.int32)
        cores = [tf.TensorSpec((1, None, None, c), tf.float32) for c in channels[:n_content]]
        styled = channels[n_content:]
        if self.masks:
            styled = [styled[j % n_style] for j in range(len(self.masks))]
        masks = [tf.TensorSpec((1, None, None, 1), tf.float32) for _ in self.masks]
        with tf.device(device):
            fns = (
                tf.function(core_stats, input_signature=[image, box, cores, masks]),
                tf.function(
                    gradient,
                    input_signature=[
                        image,
                        box,
                        cores,
                        masks,
                        tf.TensorSpec((n_content,), tf.float32),
                        [tf.TensorSpec((c, c), tf.float32) for c in styled],
                        [tf.TensorSpec((c,), tf.float32) for c in styled],
                        [tf.TensorSpec((c,), tf.float32) for c in styled],
                    ],
                ),
            )
        compiled[(device, key)] = fns
        return fns

    # -- evaluation -----------------------------------------------------------------------------

    def _over_tiles(self, work: Callable[[int, Tile, str, Any], Any]) -> list[Any]:
        """``work(index, tile, device, functions)`` for every tile, the devices in parallel."""
        results: list[Any] = [None] * len(self.tiles)
        n = len(self.models)

        def run(d: int) -> None:
            device = self.models[d][0]
            for i in range(d, len(self.tiles), n):
                with tf.device(device):
                    results[i] = work(i, self.tiles[i], device, self._fns[d])

        if n == 1:
            run(0)
        else:
            with ThreadPoolExecutor(max_workers=n) as pool:
                for f in [pool.submit(run, d) for d in range(n)]:
                    f.result()
        return results

    def _content_cores(self, tile: Tile) -> list[tf.Tensor]:
        top, bottom, left, right = tile.core
        out = []
        for layer, target in zip(self.content_layers, self.content_targets):
            s = scale_of(layer)
            out.append(tf.constant(target[:, top // s : bottom // s, left // s : right // s, :]))
        return out

    def _mask_cores(self, tile: Tile) -> list[tf.Tensor]:
        top, bottom, left, right = tile.core
        out = []
        for layer, mask in zip(self._term_layers(), self.masks):
            s = scale_of(layer)
            out.append(tf.constant(mask[None, top // s : bottom // s, left // s : right // s, None]))
        return out

    def _crop(self, x: np.ndarray, tile: Tile) -> tf.Tensor:
        return tf.constant(x[tile.window])

    def loss_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """The whole image's loss, its (content, style, tv) parts, and its gradient."""
        x = np.asarray(x, np.float32).reshape(self.shape)

        def pass1(i: int, tile: Tile, device: str, fns: Any) -> Any:
            sums, moments = fns[0](self._crop(x, tile), self._boxes[i], self._content[i], self._masks[i])
            return [s.numpy() for s in sums], [losses.Moments(*(v.numpy() for v in m)) for m in moments]

        parts = self._over_tiles(pass1)
        sums = [tf.constant(sum(p[0][i] for p in parts), tf.float32) for i in range(len(self.content_layers))]
        moments = [
            losses.Moments(
                *(tf.constant(sum(getattr(p[1][i], f) for p in parts), tf.float32) for f in losses.Moments._fields)
            )
            for i in range(len(parts[0][1]))
        ]
        watched = sums + [m.gram for m in moments] + [m.total for m in moments] + [m.squares for m in moments]
        with tf.GradientTape() as tape:
            tape.watch(watched)
            c = self.weights[0] * losses.content_loss_of(sums, self.counts, self.invariant)
            stats = moments
            if self.masks:
                stats = [losses.region_moments(m, n) for m, n in zip(moments, self.term_pixels)]
            s = self.weights[1] * losses.style_loss_of(
                stats, self.style_targets, self.layer_weights, self.image_pixels, self.invariant, self.style_loss
            )
            network = c + s
        derivatives = tape.gradient(network, watched, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        n_c, n_s = len(sums), len(moments)
        content_coefs = tf.stack(derivatives[:n_c]) if n_c else tf.zeros((0,))
        d_gram = derivatives[n_c : n_c + n_s]
        d_total = derivatives[n_c + n_s : n_c + 2 * n_s]
        d_squares = derivatives[n_c + 2 * n_s :]

        grad = np.zeros(self.shape, np.float32)

        def pass2(i: int, tile: Tile, device: str, fns: Any) -> Any:
            return fns[1](
                self._crop(x, tile),
                self._boxes[i],
                self._content[i],
                self._masks[i],
                content_coefs,
                d_gram,
                d_total,
                d_squares,
            ).numpy()

        for tile, g in zip(self.tiles, self._over_tiles(pass2)):
            grad[tile.window] += g
        tv, tv_grad = self._tv(tf.constant(x), self.tv_power)
        tv = self.weights[2] * tv
        grad += (self.weights[2] * tv_grad).numpy()
        total = float(c + s + tv)
        return total, np.array([float(c), float(s), float(tv)], np.float32), grad


def _tv_function(invariant: bool) -> Any:
    def tv(x: tf.Tensor, power: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = losses.total_variation(x, power, invariant)
        return value, tape.gradient(value, x)

    return tf.function(
        tv, input_signature=[tf.TensorSpec((1, None, None, 3), tf.float32), tf.TensorSpec((), tf.float32)]
    )


def _tile_features(
    models: Sequence[tuple[str, Any]], x: np.ndarray, layers: Sequence[str], tile: int
) -> Iterator[tuple[Tile, tf.Tensor, list[tf.Tensor]]]:
    """``(tile, its core box, the crop's float32 features)`` for every tile of ``x``, devices in turn."""
    for i, tile_ in enumerate(grid(x.shape[1], x.shape[2], tile, layers)):
        device, model = models[i % len(models)]
        with tf.device(device):
            feats = model(tf.constant(x[tile_.window]), training=False)
        yield tile_, tf.constant(tile_.box), [tf.cast(f, tf.float32) for f in feats]


def features(
    models: Sequence[tuple[str, Any]], x: np.ndarray, layers: Sequence[str], tile: int, wanted: Sequence[int]
) -> list[np.ndarray]:
    """Whole feature maps of the layers at ``wanted`` positions, computed tile by tile (exactly)."""
    height, width = x.shape[1:3]
    out: list[np.ndarray | None] = [None] * len(wanted)
    for tile_, box, feats in _tile_features(models, x, layers, tile):
        for j, k in enumerate(wanted):
            s = scale_of(layers[k])
            core = _core(feats[k], box, s).numpy()
            whole = out[j]
            if whole is None:
                whole = out[j] = np.zeros((1, height // s, width // s, core.shape[-1]), np.float32)
            top, left = tile_.core[0] // s, tile_.core[2] // s
            whole[:, top : top + core.shape[1], left : left + core.shape[2], :] = core
    return [o for o in out if o is not None]


def moments(
    models: Sequence[tuple[str, Any]],
    x: np.ndarray,
    layers: Sequence[str],
    tile: int,
    wanted: Sequence[int],
    sums: bool,
) -> list[losses.Moments]:
    """The whole image's :class:`~worker.nst.losses.Moments` at the layers at ``wanted``, tile by tile."""
    parts: list[list[losses.Moments]] = [[] for _ in wanted]
    for _, box, feats in _tile_features(models, x, layers, tile):
        for j, k in enumerate(wanted):
            parts[j].append(losses.moments(_core(feats[k], box, scale_of(layers[k])), sums))
    return [losses.add_moments(p) for p in parts]
