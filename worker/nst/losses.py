"""Content, style (Gram) and total-variation losses, in two normalizations.

``seed`` reproduces the tutorial exactly (it is the default):

* content  = Σ (F_gen − F_content)²                                   (weight 0.025)
* style_l  = Σ (G_style − G_gen)² / (4 · 3² · (H·W)²)  with G = FᵀF raw, H·W the *image* size
  (the tutorial uses 3 for the channel count and the image size at every layer), and the style
  loss is Σ_l w_l · style_l with w_l = 1/5                              (weight 1)
* tv       = Σ over the interior of (dx² + dy²)^1.25                  (weight 1)

These sums grow with the image: at 4× the pixels the content term grows 4× and the style term
stays put, so the balance between them shifts with size. ``invariant`` divides everything by
its size so one set of weights gives the same look at 128 px and 1024 px:

* content  = mean (F_gen − F_content)²
* style_l  = mean (G_style − G_gen)²  with G = FᵀF / (C·H_l·W_l)
* tv       = mean over the interior of (dx² + dy²)^power

Style targets are stored as *per-pixel* Grams P = FᵀF / (H_l·W_l) (with the per-channel means
and variances for ``style_loss="mean_std"``), computed once per job and level and blended over
style images; this makes a style image of any size comparable with the output. When the style
image has the output's size (the tutorial's case), seed mode is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import tensorflow as tf


@tf.custom_gradient
def raw_gram(features: tf.Tensor) -> tuple[tf.Tensor, object]:
    """Return FᵀF for one ``(1, H, W, C)`` feature map: a ``(C, C)`` matrix.

    The gradient is F(dG + dGᵀ): one matmul where autodiff of ``matmul(F, F)`` spends two
    (about 10 ms per evaluation at 256² on a 2-core CPU).
    """
    channels = tf.shape(features)[-1]
    flat = tf.reshape(features, (-1, channels))

    def grad(upstream: tf.Tensor) -> tf.Tensor:
        sym = upstream + tf.transpose(upstream)
        return tf.reshape(tf.matmul(flat, sym), tf.shape(features))

    return tf.matmul(flat, flat, transpose_a=True), grad


def pixels(features: tf.Tensor) -> tf.Tensor:
    """Return H·W of a ``(1, H, W, C)`` feature map as float32."""
    shape = tf.shape(features)
    return tf.cast(shape[1] * shape[2], tf.float32)


def per_pixel_gram(features: tf.Tensor) -> tf.Tensor:
    """Return FᵀF / (H·W): the style target representation, comparable across image sizes."""
    return raw_gram(features) / pixels(features)


def content_loss(gen: Sequence[tf.Tensor], targets: Sequence[tf.Tensor], invariant: bool) -> tf.Tensor:
    """Sum over content layers of the squared feature difference (a mean when ``invariant``)."""
    reduce = tf.reduce_mean if invariant else tf.reduce_sum
    return tf.add_n([reduce(tf.square(g - t)) for g, t in zip(gen, targets)])


class StyleTarget(NamedTuple):
    """What the style of one layer is compared with (blended over the style images).

    Attributes:
        gram: Per-pixel Gram matrix FᵀF / (H·W), ``(C, C)``.
        mean: Per-channel mean of the features, ``(C,)`` (``mean_std`` only).
        var: Per-channel variance of the features, ``(C,)`` (``mean_std`` only).
    """

    gram: tf.Tensor
    mean: tf.Tensor
    var: tf.Tensor


def style_target(features: tf.Tensor) -> StyleTarget:
    """The style statistics of one ``(1, H, W, C)`` feature map."""
    return target_of(moments(features, mean_std=True))


def blend(targets: Sequence[StyleTarget], weights: Sequence[float]) -> StyleTarget:
    """The weighted average of several style images' statistics (weights sum to 1)."""
    return StyleTarget(
        *(tf.add_n([w * getattr(t, name) for t, w in zip(targets, weights)]) for name in StyleTarget._fields)
    )


def _distance(target: tf.Tensor, gen: tf.Tensor, n: tf.Tensor, image_pixels: tf.Tensor, invariant: bool) -> tf.Tensor:
    """Distance of two per-pixel moment matrices (or vectors), normalized as the Gram term is."""
    if invariant:
        channels = tf.cast(tf.shape(gen)[-1], tf.float32)
        return tf.reduce_mean(tf.square((target - gen) / channels))
    return tf.reduce_sum(tf.square(n * (target - gen))) / (4.0 * 9.0 * tf.square(image_pixels))


class Moments(NamedTuple):
    """Additive statistics of one feature map (or of a region of it): what the style terms need.

    Sums over positions, so the statistics of an image are the sums of its tiles' (exact tiled
    evaluation, :mod:`worker.nst.tiling`).

    Attributes:
        gram: Raw Gram matrix FᵀF, ``(C, C)``.
        total: Per-channel Σ F, ``(C,)`` (zeros unless ``mean_std``).
        squares: Per-channel Σ F², ``(C,)`` (zeros unless ``mean_std``).
        n: Positions counted (float32 scalar).
    """

    gram: tf.Tensor
    total: tf.Tensor
    squares: tf.Tensor
    n: tf.Tensor


def moments(features: tf.Tensor, mean_std: bool) -> Moments:
    """The :class:`Moments` of a ``(1, H, W, C)`` feature map."""
    flat = tf.reshape(features, (-1, tf.shape(features)[-1]))
    if mean_std:
        total, squares = tf.reduce_sum(flat, axis=0), tf.reduce_sum(tf.square(flat), axis=0)
    else:
        total = squares = tf.zeros(tf.shape(flat)[-1:], flat.dtype)
    return Moments(raw_gram(features), total, squares, pixels(features))


def add_moments(parts: Sequence[Moments]) -> Moments:
    """The moments of the union of disjoint regions."""
    return Moments(*(tf.add_n([getattr(m, name) for m in parts]) for name in Moments._fields))


def target_of(m: Moments) -> StyleTarget:
    """The style statistics (per-pixel) of summed moments."""
    mean = m.total / m.n
    return StyleTarget(m.gram / m.n, mean, m.squares / m.n - tf.square(mean))


def style_loss(
    gen: Sequence[tf.Tensor],
    targets: Sequence[StyleTarget],
    layer_weights: tf.Tensor,
    image_pixels: tf.Tensor,
    invariant: bool,
    mean_std: bool = False,
) -> tf.Tensor:
    """Weighted sum over style layers of the distance between style statistics.

    ``gram`` (the seed's): the Gram matrices. ``mean_std`` adds, in the same units and with the
    same normalization, the per-channel means (as the outer product μμᵀ, the part of the per-pixel
    Gram that the means make) and the per-channel variances: first and second moments matched on
    top of the Gram's mixed second moments.

    Args:
        gen: Feature maps of the generated image, one per style layer (float32).
        targets: The style statistics, one per style layer.
        layer_weights: ``(L,)`` weights of the layers.
        image_pixels: H·W of the generated *image* (seed normalization only).
        invariant: Use the size-invariant normalization.
        mean_std: Add the mean and variance terms.
    """
    return style_loss_of([moments(g, mean_std) for g in gen], targets, layer_weights, image_pixels, invariant, mean_std)


def style_loss_of(
    stats: Sequence[Moments],
    targets: Sequence[StyleTarget],
    layer_weights: tf.Tensor,
    image_pixels: tf.Tensor,
    invariant: bool,
    mean_std: bool = False,
) -> tf.Tensor:
    """:func:`style_loss` from each style layer's :class:`Moments` (of the whole image)."""
    terms = []
    for i, (m, target) in enumerate(zip(stats, targets)):
        n = m.n
        channels = tf.cast(tf.shape(m.gram)[-1], tf.float32)
        if invariant:
            term = tf.reduce_mean(tf.square(target.gram / channels - m.gram / (channels * n)))
        else:
            term = tf.reduce_sum(tf.square(target.gram * n - m.gram)) / (4.0 * 9.0 * tf.square(image_pixels))
        if mean_std:
            gen = target_of(m)
            term += _distance(
                target.mean[:, None] * target.mean[None, :],
                gen.mean[:, None] * gen.mean[None, :],
                n,
                image_pixels,
                invariant,
            )
            term += _distance(target.var, gen.var, n, image_pixels, invariant)
        terms.append(layer_weights[i] * term)
    return tf.add_n(terms)


def content_loss_of(sums: Sequence[tf.Tensor], counts: Sequence[tf.Tensor], invariant: bool) -> tf.Tensor:
    """:func:`content_loss` from each content layer's Σ (F_gen − F_content)² and its element count."""
    return tf.add_n([s / c if invariant else s for s, c in zip(sums, counts)])


def total_variation(image: tf.Tensor, power: tf.Tensor, invariant: bool) -> tf.Tensor:
    """The seed's total variation: Σ over the interior of (dx² + dy²)^power (a mean when ``invariant``).

    ``dx`` and ``dy`` are taken from the same top-left-aligned ``(H−1)×(W−1)`` interior as the
    tutorial, so the last row and column only enter as neighbours.
    """
    a = tf.square(image[:, :-1, :-1, :] - image[:, 1:, :-1, :])
    b = tf.square(image[:, :-1, :-1, :] - image[:, :-1, 1:, :])
    reduce = tf.reduce_mean if invariant else tf.reduce_sum
    return reduce(tf.pow(a + b, power))
