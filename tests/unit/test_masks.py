"""Regional styles (worker.nst.masks): a white mask is the unmasked objective, a black one removes
its style, a split mask gives each half its style, tiles stay exact with masks, bad masks refused.

Seeded random weights and tiny generated images; float32 pinned where numbers are compared
(``auto`` is bfloat16 on a CPU with native bfloat16)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from producer.core.errors import ImageError, InvalidJob
from producer.core.params import Params
from worker.nst import masks

F32 = Params(size=48, precision="float32", iterations=3)


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-30))


@pytest.fixture(scope="module")
def pictures() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A content image and two unlike styles: warm blobs and cool stripes."""
    rng = np.random.default_rng(7)
    content = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    warm = np.zeros((40, 40, 3), np.uint8)
    warm[..., 0] = rng.integers(150, 256, (40, 40))
    warm[..., 1] = rng.integers(0, 90, (40, 40))
    cool = np.zeros((40, 40, 3), np.uint8)
    cool[:, ::4, 2] = 255
    cool[:, 1::4, 1] = 200
    return content, warm, cool


def evaluate(engine: Any, problem: Any, seed: int = 0) -> tuple[float, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = problem.x0 + rng.normal(0, 5, problem.x0.shape).astype(np.float32)
    return problem.loss_and_grad(x)


#: w2 on the two cheaper layers: its matrix square roots of the 512-channel layers cost seconds here.
W2 = {"style_loss": "w2", "style_layers": ["block1_conv1", "block3_conv1"]}


@pytest.mark.parametrize(
    "extra",
    [{}, {"normalization": "invariant"}, {"style_loss": "mean_std"}, W2],
    ids=["seed", "invariant", "mean_std", "w2"],
)
def test_an_all_white_mask_is_the_unmasked_objective(engine, pictures, extra) -> None:
    content, warm, _ = pictures
    params = F32.replace(**extra)
    white = np.ones((24, 32), np.float32)  # any size of the content's aspect
    plain = engine.prepare(content, [warm], params)
    masked = engine.prepare(content, [warm], params, style_masks=[white])
    (loss_p, parts_p, grad_p), (loss_m, parts_m, grad_m) = evaluate(engine, plain), evaluate(engine, masked)
    assert abs(loss_m - loss_p) <= 1e-5 * abs(loss_p)
    assert np.allclose(parts_m, parts_p, rtol=1e-5)
    assert relative(grad_p, grad_m) <= 1e-5


def test_two_styles_sharing_one_mask_blend_as_without_masks(engine, pictures) -> None:
    content, warm, cool = pictures
    mask = np.ones((48, 64), np.float32)
    plain = engine.prepare(content, [warm, cool], F32, [0.3, 0.7])
    shared = engine.prepare(content, [warm, cool], F32, [0.3, 0.7], style_masks=[mask, mask])
    (loss_p, _, grad_p), (loss_s, _, grad_s) = evaluate(engine, plain), evaluate(engine, shared)
    assert abs(loss_s - loss_p) <= 1e-5 * abs(loss_p)
    assert relative(grad_p, grad_s) <= 1e-5


def test_an_all_black_mask_removes_its_style(engine, pictures) -> None:
    content, warm, cool = pictures
    black, white = np.zeros((48, 64), np.float32), np.ones((48, 64), np.float32)
    only_cool = engine.prepare(content, [cool], F32)
    both = engine.prepare(content, [warm, cool], F32, style_masks=[black, white])
    (loss_c, _, grad_c), (loss_b, _, grad_b) = evaluate(engine, only_cool), evaluate(engine, both)
    assert abs(loss_b - loss_c) <= 1e-5 * abs(loss_c)
    assert relative(grad_c, grad_b) <= 1e-5


def test_a_split_mask_gives_each_half_its_own_style(engine, pictures) -> None:
    """Left half warm, right half cool: each half of the result is nearer (in Gram distance at
    block1_conv1 and block2_conv1) to its own style than to the other, and nearer to it than the
    same half is when the masks are swapped."""
    content, warm, cool = pictures
    left = np.zeros((48, 64), np.float32)
    left[:, :32] = 1
    params = F32.replace(
        iterations=25, content_weight=0.0, tv_weight=0.0, style_layers=["block1_conv1", "block2_conv1"]
    )
    split = engine.transfer(content, [warm, cool], params, style_masks=[left, 1 - left]).image
    swapped = engine.transfer(content, [warm, cool], params, style_masks=[1 - left, left]).image

    def gram_distance(image: np.ndarray, style: np.ndarray) -> float:
        def grams(rgb: np.ndarray) -> list[np.ndarray]:
            feats = engine._features(params, rgb)[len(params.content_layers) :]
            return [np.einsum("nhwc,nhwd->cd", f.numpy(), f.numpy()) / np.prod(f.shape[1:3]) for f in feats]

        return sum(float(np.sum((a - b) ** 2)) for a, b in zip(grams(image), grams(style)))

    middle = split.shape[1] // 2  # the output is 36x48
    for half, own, other in ((slice(0, middle), warm, cool), (slice(middle, None), cool, warm)):
        region, elsewhere = np.ascontiguousarray(split[:, half]), np.ascontiguousarray(swapped[:, half])
        assert gram_distance(region, own) < gram_distance(region, other)
        assert gram_distance(region, own) < gram_distance(elsewhere, own)


#: Layers at four scales (1, 4, 8 px a feature) with a smaller halo than the seed's block5.
DEEP = {"content_layers": ["block4_conv2"], "style_layers": ["block1_conv1", "block3_conv1", "block4_conv1"]}


@pytest.mark.parametrize("extra", [{**DEEP, "tv_weight": 0.0}, {**W2, "tv_weight": 0.0}], ids=["gram", "w2"])
def test_tiled_equals_untiled_with_masks(engine, extra) -> None:
    """Soft, overlapping masks (their sum over 1 in places) cut per tile: the whole image's loss and
    gradient exactly, in float32; the sides (150 x 214) are not multiples of the poolings, so the
    rows and columns the network drops are dropped from the masks too."""
    rng = np.random.default_rng(3)
    content = rng.integers(0, 256, (150, 214, 3), dtype=np.uint8)
    styles = [rng.integers(0, 256, (120, 150, 3), dtype=np.uint8) for _ in range(2)]
    ramp = np.tile(np.linspace(0, 1, 107, dtype=np.float32), (75, 1))
    soft = [ramp, np.clip(1.4 - ramp, 0, 1)]
    params = Params(size=(150, 214), precision="float32", **extra)
    whole = engine.prepare(content, styles, params.replace(tile=0), style_masks=soft)
    tiled = engine.prepare(content, styles, params.replace(tile=64), style_masks=soft)
    assert whole.tile == 0 and tiled.tile == 64
    x = whole.x0 + rng.normal(0, 3, whole.x0.shape).astype(np.float32)
    (loss_w, parts_w, grad_w), (loss_t, parts_t, grad_t) = whole.loss_and_grad(x), tiled.loss_and_grad(x)
    assert abs(loss_w - loss_t) <= 1e-4 * abs(loss_w)
    assert np.allclose(parts_w, parts_t, rtol=1e-4)
    assert relative(grad_w, grad_t) <= 1e-4


def test_bad_masks_are_refused_naming_the_mask(engine, pictures) -> None:
    content, warm, cool = pictures
    with pytest.raises(ImageError, match=r"style\[1\]\.mask: 64x64 px does not have the content image's aspect"):
        engine.transfer(content, [warm, cool], F32, style_masks=[None, np.ones((64, 64), np.float32)])
    black = np.zeros((48, 64), np.float32)
    with pytest.raises(ImageError, match=r"style\[0\]\.mask, style\[1\]\.mask: every mask is black everywhere"):
        engine.transfer(content, [warm, cool], F32, style_masks=[black, black])
    with pytest.raises(ImageError, match=r"style\[0\]\.mask: expected finite floats in \[0, 1\]"):
        engine.transfer(content, [warm], F32, style_masks=[np.full((48, 64), 255, np.uint8)])
    with pytest.raises(ImageError, match=r"style\[0\]\.mask: values from 0 to 2"):
        engine.transfer(content, [warm], F32, style_masks=[np.linspace(0, 2, 48 * 64).reshape(48, 64)])
    with pytest.raises(InvalidJob, match="1 masks for 2 style images"):
        engine.transfer(content, [warm, cool], F32, style_masks=[black])
    white = np.ones((48, 64), np.float32)  # a style of weight 0 has no term: its white mask applies nowhere
    with pytest.raises(ImageError, match=r"^style\[0\]\.mask: every mask is black everywhere"):
        engine.transfer(content, [warm, cool], F32, style_blend=[1.0, 0.0], style_masks=[black, white])


@pytest.mark.parametrize("normalization", ["seed", "invariant"])
def test_a_soft_masks_statistics_equal_a_numpy_computation(normalization: str) -> None:
    """The weighted statistics of one region (Σm·FFᵀ / Σm and the weighted means, normalised by Σm),
    compared as a whole image's, times the region's share: against numpy, soft mask, several layers,
    gram and mean_std and w2."""
    import tensorflow as tf

    from worker.nst import losses

    rng = np.random.default_rng(5)
    feats = [rng.normal(1, 2, (1, h, w, c)).astype(np.float32) for h, w, c in ((8, 12, 6), (4, 6, 5))]
    masks_ = [rng.uniform(0, 1, (1, h, w, 1)).astype(np.float32) for _, h, w, _ in (f.shape for f in feats)]
    style = [rng.normal(0, 1.5, f.shape).astype(np.float32) for f in feats]
    invariant = normalization == "invariant"
    image_pixels = 16.0 * 24.0
    for kind in ("gram", "mean_std", "w2"):
        targets = [losses.style_target(tf.constant(s)) for s in style]
        if kind == "w2":
            targets = [losses.with_cov_sqrt(t) for t in targets]
        stats = losses.style_stats([tf.constant(f) for f in feats], [tf.constant(m) for m in masks_], True)
        ours = float(
            losses.style_loss_of(stats, targets, tf.constant([1.0, 1.0]), tf.constant(image_pixels), invariant, kind)
        )

        theirs = 0.0
        for f, m, s in zip(feats, masks_, style):
            flat, weight = f.reshape(-1, f.shape[-1]).astype(np.float64), m.reshape(-1, 1).astype(np.float64)
            n = flat.shape[0]
            gram = (flat * weight).T @ flat / weight.sum()  # the region's per-pixel Gram
            mean = (flat * weight).sum(0) / weight.sum()
            var = (flat**2 * weight).sum(0) / weight.sum() - mean**2
            s_flat = s.reshape(-1, s.shape[-1]).astype(np.float64)
            s_gram, s_mean = s_flat.T @ s_flat / n, s_flat.mean(0)
            s_var = (s_flat**2).mean(0) - s_mean**2
            c = flat.shape[1]

            def dist(a: np.ndarray, b: np.ndarray, n: int = n, c: int = c) -> float:
                if invariant:
                    return float(np.mean(((a - b) / c) ** 2))
                return float(np.sum((n * (a - b)) ** 2) / (4 * 9 * image_pixels**2))

            if kind == "w2":
                cov, s_cov = gram - np.outer(mean, mean), s_gram - np.outer(s_mean, s_mean)
                root = losses.psd_sqrt(s_cov).astype(np.float64)
                middle = losses.psd_sqrt(root @ cov @ root).astype(np.float64)
                w2 = np.sum((mean - s_mean) ** 2) + np.trace(cov) + np.trace(s_cov) - 2 * np.trace(middle)
                key = "invariant" if invariant else "seed"
                term = losses.W2_SCALE[key] * (w2 / c if invariant else w2 * n**2 / (4 * 9 * image_pixels**2))
            else:
                term = dist(s_gram, gram)
                if kind == "mean_std":
                    term += dist(np.outer(s_mean, s_mean), np.outer(mean, mean)) + dist(s_var, var)
            theirs += term  # the region's share is a layer weight: the test below
        assert ours == pytest.approx(theirs, rel=2e-3), kind


def test_each_regions_terms_are_weighted_by_its_share_and_its_blend() -> None:
    """The layer weights of a region's terms: the layer's weight × the region's (blend × regions) ×
    its share of the layer (Σm / H_l·W_l), with the overlap shared out first."""
    import tensorflow as tf

    from worker.nst import losses
    from worker.nst.engine import _style_terms

    params = Params(size=32, style_layers=["block1_conv1", "block2_conv1"], style_layer_weights=[3.0, 1.0])
    rng = np.random.default_rng(2)
    one = [losses.style_target(tf.constant(rng.normal(size=(1, 4, 4, c)).astype(np.float32))) for c in (64, 128)]
    quarter = np.zeros((16, 16), np.float32)
    quarter[:8, :8] = 1.0
    found = masks.regions([0.75, 0.25], [np.ones((16, 16), np.float32), quarter])
    targets, weights, region_masks = _style_terms([one, one], [0.75, 0.25], params, found, (16, 16))
    assert len(targets) == len(region_masks) == 4
    # region 0 (white, weight 0.75 x 2): 1 where alone, 1/2 where the quarter overlaps it: share 7/8;
    # region 1 (the quarter, weight 0.25 x 2): 1/2 over a quarter of the image: share 1/8
    expected = [0.75 * 1.5 * 7 / 8, 0.25 * 1.5 * 7 / 8, 0.75 * 0.5 / 8, 0.25 * 0.5 / 8]
    assert np.allclose(weights.numpy(), expected)


def test_masks_at_each_layer_are_block_means_and_overlaps_are_shared() -> None:
    mask = np.arange(36, dtype=np.float32).reshape(6, 6) / 35
    assert np.allclose(masks.at_layer(mask, 2), mask.reshape(3, 2, 3, 2).mean(axis=(1, 3)))
    assert masks.at_layer(np.ones((33, 17), np.float32), 4).shape == (8, 4)  # the poolings floor
    regions = masks.regions([0.5, 0.5], [np.ones((4, 4), np.float32), np.ones((4, 4), np.float32)])
    assert regions is not None and [r.weight for r in regions] == [1.0, 1.0]
    shared = masks.at_level(regions, (4, 4))
    assert all(np.allclose(m, 0.5) for m in shared)
    assert masks.regions([0.5, 0.5], [None, None]) is None


def test_the_memory_budget_counts_the_masks() -> None:
    """Each region adds its masks and the masked copies of the style features: a larger estimate,
    and under the same memory limit a smaller automatic tile."""
    from worker.nst import budget

    params = Params(size=1024)
    pixels = 1024 * 768
    plain, two = budget.estimate_bytes(params, pixels), budget.estimate_bytes(params, pixels, regions=2)
    per_region = budget.region_bytes_per_pixel(params) + budget.mask_bytes_per_pixel(params)
    assert two - plain == pytest.approx(2 * pixels * per_region, abs=2)
    limit = plain // 2
    assert (
        0
        < budget.auto_tile(params, (768, 1024), limit, 96, regions=2)
        < budget.auto_tile(params, (768, 1024), limit, 96)
    )


def test_a_large_mask_is_held_at_about_the_outputs_size() -> None:
    """A mask far larger than the output is box-averaged as it is decoded (to at least twice the
    output's side), so a job does not hold it at its own size; its split stays where it was."""
    from support.images import png_bytes

    from worker.nst import images

    big = np.zeros((800, 1000, 3), np.uint8)
    big[:, 500:] = 255  # right half white
    held = images.load_mask(png_bytes(big), keep_px=64)
    assert held.shape == (115, 143)  # by 1000 // 128 = 7: the longest side ≥ 2 × 64, under 3 × 64
    assert np.all(held[:, :71] == 0) and np.all(held[:, 72:] == 1)  # the split at 500 / 7
    assert images.load_mask(png_bytes(big)).shape == (800, 1000)  # no output size given: as it is


def test_no_mask_for_any_style_is_a_job_without_masks() -> None:
    """`--style-mask none` for every style sends the message (and fingerprint) of a job without masks."""
    from producer.core.contract import style_field

    assert style_field(["s3://s/a.png"], None, [None]) == "s3://s/a.png"
    assert style_field(["s3://s/a.png", "s3://s/b.png"], None, [None, None]) == ["s3://s/a.png", "s3://s/b.png"]
    assert style_field(["s3://s/a.png"], None, ["s3://m/a.png"]) == [{"uri": "s3://s/a.png", "mask": "s3://m/a.png"}]
