"""``style_loss="w2"``: the squared Wasserstein-2 distance of fitted Gaussians, against scipy; the
engine optimizing with it; its normalizations and blending."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf
from support.images import random_rgb

from producer.core.params import Params
from worker.nst import losses
from worker.nst.engine import Engine, preprocess


def _features(rng: np.random.Generator, n: int, c: int, shift: float = 0.0) -> np.ndarray:
    """``(1, n, 1, c)`` ReLU-like features with correlated channels."""
    mix = rng.standard_normal((c, c)) / np.sqrt(c) + np.eye(c)
    return np.maximum(rng.standard_normal((n, c)) @ mix + shift, 0).reshape(1, n, 1, c).astype(np.float32)


def _w2_scipy(gen: np.ndarray, style: np.ndarray) -> float:
    """W2² of the Gaussians fitted to two feature maps, in float64 with scipy.linalg.sqrtm."""
    g, s = (np.asarray(f, np.float64).reshape(-1, f.shape[-1]) for f in (gen, style))
    mu_g, mu_s = g.mean(0), s.mean(0)
    cov_g, cov_s = np.cov(g, rowvar=False, bias=True), np.cov(s, rowvar=False, bias=True)
    root = scipy.linalg.sqrtm(cov_s).real
    cross = scipy.linalg.sqrtm(root @ cov_g @ root).real
    return float(np.sum((mu_g - mu_s) ** 2) + np.trace(cov_g + cov_s - 2 * cross))


def _target(style: np.ndarray) -> losses.StyleTarget:
    return losses.with_cov_sqrt(losses.blend([losses.style_target(tf.constant(style))], [1.0]))


@pytest.mark.parametrize(("n", "c"), [(50, 8), (64, 16), (400, 32)])
def test_w2_equals_scipy_on_random_features(n: int, c: int) -> None:
    rng = np.random.default_rng(c)
    gen, style = _features(rng, n, c), _features(rng, n + 7, c, shift=0.3)
    expected = _w2_scipy(gen, style)
    got = float(losses.w2_squared(losses.moments(tf.constant(gen), sums=True), _target(style)))
    assert expected > 0.1
    assert got == pytest.approx(expected, rel=2e-5)


def test_trace_sqrt_equals_scipy() -> None:
    rng = np.random.default_rng(5)
    a = rng.standard_normal((24, 24))
    spd = a @ a.T + 0.1 * np.eye(24)
    expected = float(np.trace(scipy.linalg.sqrtm(spd).real))
    assert float(losses.trace_sqrt(tf.constant(spd, tf.float32))) == pytest.approx(expected, rel=1e-5)
    assert float(losses.trace_sqrt(tf.zeros((8, 8)))) == 0.0
    # Singular (rank 3 of 32, a deep layer of a small image): still finite and accurate.
    low = rng.standard_normal((32, 3))
    singular = low @ low.T
    expected = float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(singular), 0, None))))
    assert float(losses.trace_sqrt(tf.constant(singular, tf.float32))) == pytest.approx(expected, rel=1e-4)
    np.testing.assert_allclose(losses.psd_sqrt(spd) @ losses.psd_sqrt(spd), spd, rtol=0, atol=1e-4 * np.abs(spd).max())


def test_w2_of_identical_statistics_is_zero_and_positive_otherwise() -> None:
    rng = np.random.default_rng(1)
    style = _features(rng, 80, 16)
    target = _target(style)
    same = float(losses.w2_squared(losses.moments(tf.constant(style), sums=True), target))
    scale = float(tf.linalg.trace(target.cov))
    assert abs(same) <= 1e-5 * scale
    # Other pixels in another order: the same statistics, the same Gaussian.
    shuffled = style[:, rng.permutation(80)]
    assert abs(float(losses.w2_squared(losses.moments(tf.constant(shuffled), sums=True), target))) <= 1e-5 * scale
    for other in (style + 0.5, style * 1.5, _features(rng, 80, 16)):
        assert float(losses.w2_squared(losses.moments(tf.constant(other), sums=True), target)) > 1e-3 * scale


@pytest.mark.parametrize("normalization", ["seed", "invariant"])
def test_w2_style_term_is_normalized_as_documented(normalization: str) -> None:
    """Per layer: W2²/C (invariant), W2²·(H_l·W_l)²/(4·3²·(H·W)²) (seed), scaled, weighted by the layer."""
    rng = np.random.default_rng(2)
    gens = [_features(rng, 64, 8), _features(rng, 16, 16)]
    styles = [_features(rng, 70, 8, 0.2), _features(rng, 20, 16, 0.2)]
    weights = [0.7, 0.3]
    image_pixels = 64.0
    got = losses.style_loss(
        [tf.constant(g) for g in gens],
        [_target(s) for s in styles],
        tf.constant(weights),
        tf.constant(image_pixels),
        normalization == "invariant",
        "w2",
    )
    expected = 0.0
    for w, g, s in zip(weights, gens, styles):
        n, c = g.shape[1] * g.shape[2], g.shape[-1]
        w2 = _w2_scipy(g, s)
        expected += w * (w2 / c if normalization == "invariant" else w2 * n**2 / (36.0 * image_pixels**2))
    expected *= losses.W2_SCALE[normalization]
    assert float(got) == pytest.approx(expected, rel=2e-5)
    with pytest.raises(ValueError, match="style loss 'w3' is not one of gram, mean_std, w2"):
        losses.style_loss([tf.constant(gens[0])], [_target(styles[0])], tf.constant([1.0]), 64.0, True, "w3")


def test_blend_averages_means_and_covariances() -> None:
    rng = np.random.default_rng(3)
    a, b = _features(rng, 60, 8), _features(rng, 90, 8, shift=1.0)
    ta, tb = losses.style_target(tf.constant(a)), losses.style_target(tf.constant(b))
    mixed = losses.with_cov_sqrt(losses.blend([ta, tb], [0.25, 0.75]))
    np.testing.assert_allclose(mixed.mean, 0.25 * ta.mean + 0.75 * tb.mean, rtol=1e-6)
    np.testing.assert_allclose(mixed.cov, 0.25 * ta.cov + 0.75 * tb.cov, rtol=1e-5, atol=1e-6)
    root = mixed.cov_sqrt.numpy().astype(np.float64)
    np.testing.assert_allclose(root @ root, mixed.cov, rtol=0, atol=1e-4 * float(np.abs(mixed.cov).max()))
    assert not np.any(losses.blend([ta, tb], [0.5, 0.5]).cov_sqrt.numpy())  # filled in afterwards only


def test_engine_w2_gradient_is_finite_and_lbfgs_reduces_the_loss(engine: Engine) -> None:
    params = Params(
        size=(32, 32),
        iterations=5,
        style_loss="w2",
        normalization="invariant",
        content_weight=1.0,
        style_weight=100.0,
        tv_weight=0.0,
        precision="float32",
        content_layers=("block3_conv2",),
        style_layers=("block1_conv1", "block2_conv1", "block3_conv1"),
    )
    problem = engine.prepare(random_rgb(32, 32, 1), [random_rgb(40, 40, 2), random_rgb(24, 36, 3)], params)
    loss, parts, grad = problem.loss_and_grad(problem.x0)
    assert np.isfinite(loss) and parts[1] > 0 and np.isfinite(grad).all() and np.abs(grad).max() > 0
    result = problem.optimize(5)
    assert result.iterations >= 3
    assert result.history[-1].loss < 0.9 * result.history[0].loss
    assert result.style_loss < parts[1]


def test_engine_w2_gradient_matches_finite_differences(engine: Engine) -> None:
    params = Params(
        size=(16, 16),
        style_loss="w2",
        normalization="invariant",
        content_weight=0.0,
        tv_weight=0.0,
        style_weight=1.0,
        precision="float32",
        style_layers=("block1_conv1", "block2_conv1"),
    )
    problem = engine.prepare(random_rgb(16, 16, 1), [random_rgb(16, 16, 2)], params)
    x = preprocess(random_rgb(16, 16, 3)).astype(np.float64)
    _, _, grad = problem.loss_and_grad(x)
    rng = np.random.default_rng(0)
    for _ in range(2):
        # Mostly along the gradient: W2's loss carries float32 cancellation noise (~1e-5 of its
        # value: tr Σ + tr Σs − 2·tr(...)^½), which a random direction's tiny slope drowns in.
        d = grad / np.linalg.norm(grad) + 0.5 * rng.standard_normal(x.shape) / np.sqrt(x.size)
        d /= np.linalg.norm(d)
        eps = 4.0
        numeric = (problem.loss_and_grad(x + eps * d)[0] - problem.loss_and_grad(x - eps * d)[0]) / (2 * eps)
        assert float(np.sum(grad * d)) == pytest.approx(numeric, rel=2e-2)
