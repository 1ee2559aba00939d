"""Content, style (Gram, mean_std, W2) and total-variation losses, in two normalizations.

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

Style targets are stored as *per-pixel* Grams P = FᵀF / (H_l·W_l) (with the per-channel means,
variances and the channel covariance for ``mean_std`` and ``w2``), computed once per job and level
and blended over style images; this makes a style image of any size comparable with the output.
When the style image has the output's size (the tutorial's case), seed mode is exact.

``style_loss="w2"`` replaces the Gram distance of a layer by the squared Wasserstein-2 distance
between the Gaussians fitted to the generated and the style features (:func:`w2_squared`):

    W2² = ‖μ − μs‖² + tr(Σ + Σs − 2·(Σs^½ Σ Σs^½)^½)

with μ the per-channel mean and Σ = FᵀF/N − μμᵀ the channel covariance, both from the additive
:class:`Moments` (so tiles stay exact). W2² is a mean squared displacement of features (units:
feature², summed over the C channels). It is normalized as follows:

* ``invariant``: ``W2_SCALE["invariant"]`` · W2² / C, the mean over channels (as crowsonkb's
  StyleLossW2): size-invariant, and in the units of the invariant content term (a mean squared
  feature difference);
* ``seed``: ``W2_SCALE["seed"]`` · W2² · (H_l·W_l)² / (4 · 3² · (H·W)²), the Gram term's constants
  with W2² in place of the squared Frobenius distance of the per-pixel Grams ‖P_style − P_gen‖²:
  like the seed's style term it does not grow with the image, and it weighs the layers as the
  seed does.

W2² is in feature² where the Gram distance is in feature⁴ (ImageNet VGG19 features: W2 pulls
~10⁸ times less at the same weight), so :data:`W2_SCALE` brings it to the Gram term's strength:
the same ``style_weight`` gives ``w2`` about the style-to-content balance it gives ``gram``.

Σs^½ is computed once per job and level (:func:`with_cov_sqrt`: an eigendecomposition in
float64); the square root of Σs^½ Σ Σs^½ at every evaluation by coupled
Newton–Schulz iterations in float32 (:func:`trace_sqrt`), differentiated by autodiff.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from producer.core.params import STYLE_LOSSES


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
        mean: Per-channel mean of the features, ``(C,)`` (``mean_std`` and ``w2``).
        var: Per-channel variance of the features, ``(C,)`` (``mean_std`` only).
        cov: Channel covariance FᵀF / (H·W) − μμᵀ, ``(C, C)`` (``w2`` only).
        cov_sqrt: The PSD square root of ``cov`` (``w2`` only): zeros until :func:`with_cov_sqrt`.
    """

    gram: tf.Tensor
    mean: tf.Tensor
    var: tf.Tensor
    cov: tf.Tensor
    cov_sqrt: tf.Tensor


def style_target(features: tf.Tensor) -> StyleTarget:
    """The style statistics of one ``(1, H, W, C)`` feature map."""
    return target_of(moments(features, sums=True))


def blend(targets: Sequence[StyleTarget], weights: Sequence[float]) -> StyleTarget:
    """The weighted average of several style images' statistics (weights sum to 1).

    Every statistic is averaged with the weights: the per-pixel Grams, the means, the variances
    and, for ``w2``, the covariances (so W2's target is the Gaussian with the blended mean and the
    blended covariance, not the Gaussian fitted to the pooled features of all the style images,
    whose covariance would add the spread between the images' means). ``cov_sqrt`` is not a
    linear statistic: it comes back as zeros, for :func:`with_cov_sqrt` to compute from the
    blended covariance.
    """
    blended = {
        name: tf.add_n([w * getattr(t, name) for t, w in zip(targets, weights)])
        for name in StyleTarget._fields
        if name != "cov_sqrt"
    }
    return StyleTarget(**blended, cov_sqrt=tf.zeros_like(blended["cov"]))


def psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric PSD square root of a symmetric matrix, by eigendecomposition in float64.

    Eigenvalues that rounding made negative count as zero. Returned as float32.
    """
    m = np.asarray(matrix, np.float64)
    values, vectors = np.linalg.eigh((m + m.T) / 2)
    return ((vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T).astype(np.float32)


def with_cov_sqrt(target: StyleTarget) -> StyleTarget:
    """``target`` with Σs^½ filled in (``w2``): once per job and level, after :func:`blend`."""
    return target._replace(cov_sqrt=tf.constant(psd_sqrt(target.cov.numpy())))


#: What the W2 style term is multiplied by, per normalization, so that one ``style_weight`` gives
#: ``w2`` the style pull it gives ``gram``: the ratio of the two style terms' gradient norms at the
#: start of a run (the content image), measured with the ImageNet weights at 256² on tubingen +
#: starry_night and golden_gate + the_scream (1.1e8 and 1.7e8 for the seed's normalization at
#: style_weight 1; 340 and 380 for the invariant one at 200), their geometric mean rounded.
#: ``benchmarks/w2.py`` measures it. The layers are not balanced one by one: the sum is.
W2_SCALE = {"seed": 1.4e8, "invariant": 360.0}

#: Newton–Schulz iterations of :func:`trace_sqrt`. Each multiplies the smallest eigenvalues'
#: share of convergence by about 2.25; past ~22, float32 rounding noise in the null space of a
#: singular matrix (a layer with fewer positions than channels) grows into the result. 18 is
#: accurate to ~1e-5 relative on well-conditioned matrices and ~1e-3 on VGG-like spectra
#: (condition numbers of 1e8 and more), where float32 itself cannot resolve much better.
NEWTON_SCHULZ_ITERATIONS = 18


def trace_sqrt(matrix: tf.Tensor, iterations: int = NEWTON_SCHULZ_ITERATIONS) -> tf.Tensor:
    """tr(A^½) of a symmetric positive semi-definite ``(C, C)`` float32 matrix.

    Coupled Newton–Schulz (Higham's; Lin & Maji for its use in networks): with A normalized by
    its Frobenius norm (all eigenvalues in [0, 1], where it converges), Y₀ = A, Z₀ = I,
    T = (3I − Z Y)/2, Y ← Y T, Z ← T Z; Y → A^½. Only matrix products, a fixed number of
    them: stable in float32, the same on every device, and differentiable by autodiff (the
    gradient is the exact derivative of the value computed). The zero matrix gives 0.
    """
    # ‖A‖_F computed without overflow; the 1e-12 (under float32's resolution of a sum >= 1) keeps
    # the zero matrix and its gradient finite.
    scale = tf.reduce_max(tf.abs(matrix)) + 1e-30
    norm = scale * tf.sqrt(tf.reduce_sum(tf.square(matrix / scale)) + 1e-12)
    eye = tf.eye(tf.shape(matrix)[0], dtype=matrix.dtype)
    y = matrix / norm
    if iterations < 2:
        return tf.sqrt(norm) * tf.linalg.trace(y if iterations == 0 else 1.5 * y - 0.5 * tf.matmul(y, y))
    # The first iteration has Z = I (one product, not three); the last needs only tr(Y T) =
    # Σ Y ∘ Tᵀ (one product): 3·iterations − 4 products in all.
    t = 1.5 * eye - 0.5 * y
    y, z = tf.matmul(y, t), t
    for _ in range(iterations - 2):
        t = 1.5 * eye - 0.5 * tf.matmul(z, y)
        y, z = tf.matmul(y, t), tf.matmul(t, z)
    t = 1.5 * eye - 0.5 * tf.matmul(z, y)
    return tf.sqrt(norm) * tf.reduce_sum(y * tf.transpose(t))


def w2_squared(m: Moments, target: StyleTarget) -> tf.Tensor:
    """W2² between the Gaussians fitted to summed moments (``total`` needed) and a style target.

    ‖μ − μs‖² + tr(Σ) + tr(Σs) − 2·tr((Σs^½ Σ Σs^½)^½), per pixel (units: feature²). Rounding can
    leave it slightly below 0 when the statistics are equal (by ~1e-6 of tr Σ); it is not clipped,
    which would cut the gradient.
    """
    mean = m.total / m.n
    cov = m.gram / m.n - mean[:, None] * mean[None, :]
    cov = 0.5 * (cov + tf.transpose(cov))
    product = tf.matmul(target.cov_sqrt, tf.matmul(cov, target.cov_sqrt))
    product = 0.5 * (product + tf.transpose(product))
    return (
        tf.reduce_sum(tf.square(mean - target.mean))
        + tf.linalg.trace(cov)
        + tf.linalg.trace(target.cov)
        - 2.0 * trace_sqrt(product)
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
        total: Per-channel Σ F, ``(C,)`` (zeros unless ``sums``: ``mean_std`` and ``w2``).
        squares: Per-channel Σ F², ``(C,)`` (zeros unless ``sums``).
        n: Positions counted (float32 scalar).
    """

    gram: tf.Tensor
    total: tf.Tensor
    squares: tf.Tensor
    n: tf.Tensor


def moments(features: tf.Tensor, sums: bool) -> Moments:
    """The :class:`Moments` of a ``(1, H, W, C)`` feature map (the per-channel sums when ``sums``)."""
    flat = tf.reshape(features, (-1, tf.shape(features)[-1]))
    if sums:
        total, squares = tf.reduce_sum(flat, axis=0), tf.reduce_sum(tf.square(flat), axis=0)
    else:
        total = squares = tf.zeros(tf.shape(flat)[-1:], flat.dtype)
    return Moments(raw_gram(features), total, squares, pixels(features))


def masked_moments(features: tf.Tensor, mask: tf.Tensor, sums: bool) -> Moments:
    """The :class:`Moments` of a ``(1, H, W, C)`` feature map weighted by a ``(1, H, W, 1)`` mask.

    Σ m·FFᵀ, Σ m·F, Σ m·F² and n = Σ m (a region of soft weight): additive like :func:`moments`,
    so a tile's share is its core's with its part of the mask. :func:`region_moments` turns the
    sums into the region's statistics.
    """
    gram = raw_gram(features * tf.sqrt(mask))
    channels = tf.shape(features)[-1]
    if sums:
        weighted = tf.reshape(features * mask, (-1, channels))
        total = tf.reduce_sum(weighted, axis=0)
        squares = tf.reduce_sum(weighted * tf.reshape(features, (-1, channels)), axis=0)
    else:
        total = squares = tf.zeros((channels,), features.dtype)
    return Moments(gram, total, squares, tf.reduce_sum(mask))


def region_moments(m: Moments, layer_pixels: tf.Tensor) -> Moments:
    """Masked sums (:func:`masked_moments`) rescaled to ``layer_pixels`` positions.

    The region's per-pixel statistics (the sums over Σm) are kept and the count becomes the
    layer's H·W, so the style terms compare them exactly as they compare a whole image's; a
    white mask gives back the unmasked moments exactly (the factor is 1). A region the layer does
    not see (Σm = 0) gives zeros (its term is weighted 0).
    """
    factor = layer_pixels / tf.maximum(m.n, 1e-12)
    return Moments(m.gram * factor, m.total * factor, m.squares * factor, layer_pixels)


def style_stats(gen: Sequence[tf.Tensor], masks: Sequence[tf.Tensor], sums: bool) -> list[Moments]:
    """The moments every style term compares: one per style layer, or one per region and layer.

    Args:
        gen: The generated image's feature map at each style layer.
        masks: Empty (no regions), or ``(1, H_l, W_l, 1)`` masks region-major: the mask of region
            g at layer l is ``masks[g * len(gen) + l]`` (:mod:`worker.nst.masks`).
        sums: Whether the per-channel sums are needed (:func:`needs_sums`).
    """
    if not masks:
        return [moments(g, sums) for g in gen]
    layers = len(gen)
    return [
        region_moments(masked_moments(gen[j % layers], m, sums), pixels(gen[j % layers])) for j, m in enumerate(masks)
    ]


def add_moments(parts: Sequence[Moments]) -> Moments:
    """The moments of the union of disjoint regions."""
    return Moments(*(tf.add_n([getattr(m, name) for m in parts]) for name in Moments._fields))


def target_of(m: Moments) -> StyleTarget:
    """The style statistics (per-pixel) of summed moments (``total`` and ``squares`` needed)."""
    mean = m.total / m.n
    gram = m.gram / m.n
    cov = gram - mean[:, None] * mean[None, :]
    return StyleTarget(gram, mean, m.squares / m.n - tf.square(mean), cov, tf.zeros_like(cov))


def needs_sums(kind: str) -> bool:
    """Whether the ``kind`` of style loss needs the per-channel sums of :class:`Moments`."""
    return kind != "gram"


def style_loss(
    gen: Sequence[tf.Tensor],
    targets: Sequence[StyleTarget],
    layer_weights: tf.Tensor,
    image_pixels: tf.Tensor,
    invariant: bool,
    kind: str = "gram",
) -> tf.Tensor:
    """Weighted sum over style layers of the distance between style statistics.

    ``gram`` (the seed's): the Gram matrices. ``mean_std`` adds, in the same units and with the
    same normalization, the per-channel means (as the outer product μμᵀ, the part of the per-pixel
    Gram that the means make) and the per-channel variances: first and second moments matched on
    top of the Gram's mixed second moments. ``w2``: instead of the Gram term, the squared
    Wasserstein-2 distance of the fitted Gaussians (:func:`w2_squared`; normalized and scaled by
    :data:`W2_SCALE` as the module says; the targets need :func:`with_cov_sqrt`).

    Args:
        gen: Feature maps of the generated image, one per style layer (float32).
        targets: The style statistics, one per style layer.
        layer_weights: ``(L,)`` weights of the layers.
        image_pixels: H·W of the generated *image* (seed normalization only).
        invariant: Use the size-invariant normalization.
        kind: ``gram``, ``mean_std`` or ``w2`` (``params.style_loss``).
    """
    sums = needs_sums(kind)
    return style_loss_of([moments(g, sums) for g in gen], targets, layer_weights, image_pixels, invariant, kind)


def style_loss_of(
    stats: Sequence[Moments],
    targets: Sequence[StyleTarget],
    layer_weights: tf.Tensor,
    image_pixels: tf.Tensor,
    invariant: bool,
    kind: str = "gram",
) -> tf.Tensor:
    """:func:`style_loss` from each style layer's :class:`Moments` (of the whole image)."""
    if kind not in STYLE_LOSSES:
        raise ValueError(f"style loss {kind!r} is not one of {', '.join(STYLE_LOSSES)}")
    terms = []
    for i, (m, target) in enumerate(zip(stats, targets)):
        n = m.n
        channels = tf.cast(tf.shape(m.gram)[-1], tf.float32)
        if kind == "w2":
            w2 = w2_squared(m, target)
            if invariant:
                term = W2_SCALE["invariant"] * w2 / channels
            else:
                term = W2_SCALE["seed"] * w2 * tf.square(n / image_pixels) / (4.0 * 9.0)
        elif invariant:
            term = tf.reduce_mean(tf.square(target.gram / channels - m.gram / (channels * n)))
        else:
            term = tf.reduce_sum(tf.square(target.gram * n - m.gram)) / (4.0 * 9.0 * tf.square(image_pixels))
        if kind == "mean_std":
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
    tutorial, so the last row and column only enter as neighbours. The gradient is written out
    (2·power·s^(power−1)·(dx, dy), padded back into place): autodiff's strided-slice gradients
    cost twice as much (12 against 5.4 ms at 256² on a 2-core CPU). Not differentiable w.r.t.
    ``power``.
    """

    @tf.custom_gradient
    def tv(image: tf.Tensor) -> tuple[tf.Tensor, object]:
        core = image[:, :-1, :-1, :]
        dx = core - image[:, 1:, :-1, :]
        dy = core - image[:, :-1, 1:, :]
        s = dx * dx + dy * dy
        scale = 1.0 / tf.cast(tf.size(s), s.dtype) if invariant else tf.constant(1.0, s.dtype)

        def grad(upstream: tf.Tensor) -> tf.Tensor:
            w = (2.0 * upstream * scale * power) * tf.pow(s, power - 1.0)
            gx, gy = w * dx, w * dy
            return (
                tf.pad(gx + gy, [[0, 0], [0, 1], [0, 1], [0, 0]])
                - tf.pad(gx, [[0, 0], [1, 0], [0, 1], [0, 0]])
                - tf.pad(gy, [[0, 0], [0, 1], [1, 0], [0, 0]])
            )

        return tf.reduce_sum(tf.pow(s, power)) * scale, grad

    return tv(image)
