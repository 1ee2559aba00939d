import keras
import numpy as np
import pytest
from PIL import Image
from support.images import random_rgb

from producer.core.digest import sha256_file
from producer.core.errors import ConfigError, ImageError, InvalidJob, WeightsError
from producer.core.params import Params
from worker.nst import vgg
from worker.nst.engine import Engine, Progress, deprocess, preprocess

SMALL = Params(size=(32, 48), iterations=4)


def _gram(f: np.ndarray) -> np.ndarray:
    flat = f.reshape(-1, f.shape[-1]).astype(np.float64)
    return flat.T @ flat


def test_preprocess_matches_keras_and_round_trips() -> None:
    rgb = random_rgb(16, 24)
    ours = preprocess(rgb)
    theirs = keras.applications.vgg19.preprocess_input(rgb[None].astype(np.float32))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)
    assert (deprocess(ours) == rgb).all()


@pytest.mark.pinned_precision
def test_seed_loss_equals_straightforward_computation(engine: Engine, weights_file: str) -> None:
    """The engine's loss equals the tutorial's formulas computed on a separately built full VGG19."""
    h, w = 32, 48
    content, style = random_rgb(h, w, 1), random_rgb(h, w, 2)
    problem = engine.prepare(content, [style], Params(size=(h, w), precision="float32"))
    x = preprocess(random_rgb(h, w, 3))
    loss, parts, _ = problem.loss_and_grad(x)

    full = keras.applications.VGG19(include_top=False, weights=weights_file, input_shape=(h, w, 3))
    names = ["block5_conv2"] + [f"block{i}_conv1" for i in range(1, 6)]
    model = keras.Model(full.input, [full.get_layer(n).output for n in names])
    batch = np.concatenate([preprocess(content), preprocess(style), x])
    feats = [np.asarray(f, np.float64) for f in model(batch)]
    c = 0.025 * np.sum((feats[0][2] - feats[0][0]) ** 2)
    s = sum(0.2 * np.sum((_gram(f[1]) - _gram(f[2])) ** 2) / (4.0 * 9 * (h * w) ** 2) for f in feats[1:])
    xx = x.astype(np.float64)
    a = (xx[:, : h - 1, : w - 1] - xx[:, 1:, : w - 1]) ** 2
    b = (xx[:, : h - 1, : w - 1] - xx[:, : h - 1, 1:]) ** 2
    t = np.sum((a + b) ** 1.25)
    assert c > 0 and s > 0 and t > 0
    np.testing.assert_allclose(parts, [c, s, t], rtol=2e-4)
    np.testing.assert_allclose(loss, c + s + t, rtol=2e-4)


@pytest.mark.pinned_precision
@pytest.mark.parametrize("normalization", ["seed", "invariant"])
def test_gradient_matches_finite_differences(engine: Engine, normalization: str) -> None:
    """float32 pinned: a central difference of a bfloat16 loss is rounding noise (bfloat16's gradient
    is checked against float32's in test_bfloat16_loss_and_gradient_are_close_to_float32)."""
    params = Params(
        size=(16, 16), normalization=normalization, content_weight=1.0, style_weight=1e3, precision="float32"
    )
    problem = engine.prepare(random_rgb(16, 16, 1), [random_rgb(16, 16, 2)], params)
    x = preprocess(random_rgb(16, 16, 3)).astype(np.float64)
    _, _, grad = problem.loss_and_grad(x)
    rng = np.random.default_rng(0)
    for _ in range(3):
        d = rng.standard_normal(x.shape)
        d /= np.linalg.norm(d)
        eps = 0.5  # pixel units: large enough to beat float32 round-off in the loss
        numeric = (problem.loss_and_grad(x + eps * d)[0] - problem.loss_and_grad(x - eps * d)[0]) / (2 * eps)
        analytic = float(np.sum(grad * d))
        assert analytic == pytest.approx(numeric, rel=2e-2)


def test_loss_decreases_and_progress_is_reported(engine: Engine, content: np.ndarray, style: np.ndarray) -> None:
    seen: list[Progress] = []
    result = engine.transfer(content, [style], Params(size=48, iterations=6), callback=seen.append)
    assert [p.iteration for p in seen] == list(range(1, len(seen) + 1))
    assert len(seen) == result.iterations >= 3
    assert all(p.total == 6 for p in seen)
    losses = [p.loss for p in seen]
    assert all(b <= a for a, b in zip(losses, losses[1:]))
    assert losses[-1] < 0.9 * losses[0]
    first = seen[0]
    assert first.loss == pytest.approx(first.content_loss + first.style_loss + first.tv_loss, rel=1e-5)
    assert result.image.shape == (36, 48, 3) and result.image.dtype == np.uint8
    assert result.evaluations >= result.iterations
    assert result.loss == pytest.approx(result.content_loss + result.style_loss + result.tv_loss, rel=1e-5)


def test_callback_can_stop_early(engine: Engine, content: np.ndarray, style: np.ndarray) -> None:
    result = engine.transfer(content, [style], Params(size=32, iterations=50), callback=lambda p: p.iteration >= 2)
    assert result.iterations == 2 and result.stopped == "callback"


def test_same_seed_same_output(engine: Engine, content: np.ndarray, style: np.ndarray) -> None:
    params = Params(size=32, iterations=3, init="noise", seed=42)
    a = engine.transfer(content, [style], params)
    b = engine.transfer(content, [style], params)
    c = engine.transfer(content, [style], params.replace(seed=43))
    assert (a.image == b.image).all() and a.loss == b.loss
    assert not (a.image == c.image).all()


def test_no_retrace_for_a_second_job_of_the_same_shape(weights_file: str) -> None:
    engine = Engine(weights=weights_file)
    engine.transfer(random_rgb(32, 32, 1), [random_rgb(40, 40, 2)], Params(size=32, iterations=2))
    assert engine.traces == 1
    # different images, style size, weights and iteration count, same output shape: no retrace
    engine.transfer(
        random_rgb(64, 64, 3),
        [random_rgb(20, 36, 4)],
        Params(size=32, iterations=3, content_weight=5.0, style_weight=0.5, tv_weight=0.1),
    )
    assert engine.traces == 1
    engine.transfer(random_rgb(32, 48, 3), [random_rgb(32, 32, 4)], Params(size=48, iterations=2))
    assert engine.traces == 2  # a new shape traces once


def test_model_is_built_once_and_cut_after_the_deepest_layer(weights_file: str) -> None:
    a = vgg.feature_model(weights_file, ["block3_conv1", "block1_conv1"])
    assert vgg.feature_model(weights_file, ["block3_conv1", "block1_conv1"]) is a
    conv_names = [layer.name for layer in a.layers if "conv" in layer.name]
    assert conv_names[-1] == "block3_conv1" and len(conv_names) == 5
    b = vgg.feature_model(weights_file, ["block1_conv1"])
    assert b.get_layer("block1_conv1") is a.get_layer("block1_conv1")  # one set of weights


def test_several_styles_blend(engine: Engine, content: np.ndarray) -> None:
    s1, s2 = random_rgb(32, 32, 5), random_rgb(32, 32, 6)
    params = Params(size=32, iterations=2)
    only_first = engine.transfer(content, [s1, s2], params, style_blend=[1.0, 0.0])
    alone = engine.transfer(content, [s1], params)
    assert only_first.loss == pytest.approx(alone.loss, rel=1e-4)
    mixed = engine.transfer(content, [s1, s2], params, style_blend=[0.5, 0.5])
    assert mixed.loss != pytest.approx(alone.loss, rel=1e-3)
    with pytest.raises(InvalidJob, match="blend weight"):
        engine.transfer(content, [s1, s2], params, style_blend=[1.0])


def test_preserve_colors_keeps_content_chroma(engine: Engine, content: np.ndarray, style: np.ndarray) -> None:
    from PIL import Image

    result = engine.transfer(content, [style], Params(size=48, iterations=2, color="preserve"))
    ycc = np.asarray(Image.fromarray(result.image).convert("YCbCr"), np.int16)
    ref = np.asarray(Image.fromarray(content).resize((48, 36)).convert("YCbCr"), np.int16)
    assert np.abs(ycc[..., 1:] - ref[..., 1:]).mean() < 3


def test_init_from_image_and_missing_init(engine: Engine, content: np.ndarray, style: np.ndarray) -> None:
    init = random_rgb(36, 48, 9)
    result = engine.transfer(content, [style], Params(size=48, iterations=1, init="image"), init_image=init)
    assert result.image.shape == (36, 48, 3)
    with pytest.raises(InvalidJob, match="params.init"):
        engine.transfer(content, [style], Params(size=48, iterations=1, init="image"))


def test_invariant_normalization_does_not_scale_with_size(engine: Engine) -> None:
    """The same picture tiled 2x2 (same statistics, 4x the pixels): seed content grows ~4x, invariant doesn't."""
    tile = lambda img: np.tile(img, (2, 2, 1))  # noqa: E731
    content, style, gen = random_rgb(32, 32, 1), random_rgb(32, 32, 2), random_rgb(32, 32, 7)
    layers = {"content_layers": ("block3_conv1",), "style_layers": ("block1_conv1", "block2_conv1", "block3_conv1")}
    ratios = {}
    for norm in ("seed", "invariant"):
        parts = []
        for c, s, x in ((content, style, gen), (tile(content), tile(style), tile(gen))):
            p = engine.prepare(c, [s], Params(size=c.shape[0], normalization=norm, **layers))
            parts.append(p.loss_and_grad(preprocess(x))[1])
        ratios[norm] = parts[1] / parts[0]
    assert 3.0 < ratios["seed"][0] < 5.0  # the content sum grows with the pixel count
    assert 0.75 < ratios["invariant"][0] < 1.33 and 0.75 < ratios["invariant"][1] < 1.33


def test_too_small_for_the_layers(engine: Engine, style: np.ndarray) -> None:
    with pytest.raises(ImageError, match="too small for the layers used"):
        engine.transfer(random_rgb(32, 32), [style], Params(size=32, style_scale=0.25))


def test_weights_errors(tmp_path, weights_file: str) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        vgg.feature_model(str(tmp_path / "nope.weights.h5"), ["block1_conv1"])
    with pytest.raises(WeightsError, match="expected 00"):
        vgg.feature_model(weights_file, ["block1_conv1"], sha256="00" * 32)
    good = sha256_file(weights_file)
    assert vgg.feature_model(weights_file, ["block1_conv1"], sha256=good) is not None


def test_a_weights_file_under_the_other_format_s_name_says_what_to_rename(tmp_path, weights_file: str) -> None:
    """Keras picks its reader from the name: a Keras 3 file named plain .h5 (as when uploaded as
    s3://models/w.h5) would fail with "Layer count mismatch ... found 0 saved layers"."""
    import shutil

    import h5py

    plain = tmp_path / "w.h5"
    shutil.copy(weights_file, plain)
    with pytest.raises(WeightsError, match=r"is a Keras 3 weights file.*w\.weights\.h5"):
        vgg.feature_model(str(plain), ["block1_conv1"])
    legacy = tmp_path / "old.weights.h5"
    with h5py.File(legacy, "w") as f:
        f.attrs["layer_names"] = [b"block1_conv1"]
    with pytest.raises(WeightsError, match=r"legacy .* HDF5 weights file.*old\.h5"):
        vgg.feature_model(str(legacy), ["block1_conv1"])
    (tmp_path / "junk.weights.h5").write_bytes(b"not hdf5")
    with pytest.raises(WeightsError, match="not an HDF5 file"):
        vgg.feature_model(str(tmp_path / "junk.weights.h5"), ["block1_conv1"])


def test_imagenet_without_network_says_how_to_give_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args, **kwargs):
        raise OSError("URL fetch failure: network is unreachable")

    monkeypatch.setattr("keras.src.utils.file_utils.get_file", no_network)
    with pytest.raises(WeightsError, match="--weights PATH"):
        vgg.feature_model("imagenet", ["block1_conv1"], sha256=None)


@pytest.mark.pinned_precision
def test_bfloat16_loss_and_gradient_are_close_to_float32(engine: Engine) -> None:
    """bfloat16 convolutions, float32 losses: the objective and its gradient barely move."""
    content, style, x = random_rgb(32, 32, 1), random_rgb(32, 32, 2), preprocess(random_rgb(32, 32, 3))
    results = {}
    for precision in ("float32", "bfloat16"):
        params = Params(size=32, normalization="invariant", content_weight=1, style_weight=200, precision=precision)
        results[precision] = engine.prepare(content, [style], params).loss_and_grad(x)
    (l32, p32, g32), (l16, p16, g16) = results["float32"], results["bfloat16"]
    assert l16 == pytest.approx(l32, rel=0.03)
    np.testing.assert_allclose(p16, p32, rtol=0.05)
    cosine = float(np.sum(g16 * g32) / (np.linalg.norm(g16) * np.linalg.norm(g32)))
    assert cosine > 0.99
    assert engine.precision(Params(precision="auto")) in ("float32", "bfloat16")


def test_auto_precision_is_float32_without_native_bfloat16(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.nst.vgg import AUTO_PRECISION_ENV, native_bfloat16, resolve_precision

    monkeypatch.delenv(AUTO_PRECISION_ENV, raising=False)
    assert resolve_precision("bfloat16") == "bfloat16" and resolve_precision("float32") == "float32"
    assert resolve_precision("auto") == ("bfloat16" if native_bfloat16() else "float32")


def test_the_switch_makes_auto_resolve_as_on_another_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.nst.vgg import AUTO_PRECISION_ENV, resolve_precision

    for forced in ("bfloat16", "float32"):
        monkeypatch.setenv(AUTO_PRECISION_ENV, forced)
        assert resolve_precision("auto") == forced
        assert resolve_precision("float32") == "float32" and resolve_precision("bfloat16") == "bfloat16"
    monkeypatch.setenv(AUTO_PRECISION_ENV, "fp16")
    with pytest.raises(ConfigError, match="STYLEQUEUE_AUTO_PRECISION: 'fp16'"):
        resolve_precision("auto")


def test_coarse_to_fine_levels_and_progress_across_them(engine: Engine) -> None:
    content, style = random_rgb(48, 64, 1), random_rgb(40, 40, 2)
    params = Params(size=64, iterations=3, scales=3, scale_iterations=2, init="noise", seed=1)
    plan = engine.plan(content.shape[:2], params)
    assert [(lv.height, lv.width) for lv in plan] == [(24, 32), (34, 45), (48, 64)]  # ÷√2 per level
    assert [lv.iterations for lv in plan] == [2, 2, 3]
    seen: list[Progress] = []
    result = engine.transfer(content, [style], params, callback=seen.append)
    assert [p.iteration for p in seen] == list(range(1, 8)) and {p.total for p in seen} == {7}
    assert [p.level for p in seen] == [1, 1, 2, 2, 3, 3, 3] and {p.levels for p in seen} == {3}
    assert result.image.shape == (48, 64, 3) and result.iterations == 7
    assert len(engine.plan((20, 20), Params(size=16, scales=4))) == 1  # no level under VGG19's minimum


def test_a_state_resumes_the_pyramid_where_it_was(engine: Engine) -> None:
    """A checkpoint taken at level 2 resumes there, counting on: what a crashed job's takeover does."""
    content, style = random_rgb(48, 64, 1), random_rgb(40, 40, 2)
    params = Params(size=64, iterations=3, scales=2, scale_iterations=2, init="noise", seed=2)
    states = []
    engine.transfer(content, [style], params, on_state=states.append)
    mid = next(s for s in states if s.level == 1 and s.iteration == 3)
    seen: list[Progress] = []
    result = engine.transfer(content, [style], params, callback=seen.append, resume=mid)
    assert result.resumed_from == 3 and [p.iteration for p in seen] == [4, 5] and result.iterations == 5


def test_luminance_mode_keeps_the_content_chroma(engine: Engine, content: np.ndarray, style: np.ndarray) -> None:
    from worker.nst import colour

    result = engine.transfer(content, [style], Params(size=48, iterations=3, color="luminance"))
    ref = np.asarray(Image.fromarray(content).resize((48, 36)))
    diff = np.abs(colour.chroma(result.image).astype(int) - colour.chroma(ref).astype(int))
    assert diff.mean() < 1.0 and (diff > 2).mean() < 0.05  # equal, but for RGB gamut clipping


def test_match_gives_the_style_the_contents_colour_statistics() -> None:
    from worker.nst import colour

    content, style = random_rgb(40, 40, 3), random_rgb(40, 40, 4)[..., ::-1].copy()
    matched = colour.match(style, content).reshape(-1, 3).astype(float)
    c = content.reshape(-1, 3).astype(float)
    # Equal, up to the clipping of colours that fall outside 0…255.
    np.testing.assert_allclose(matched.mean(0), c.mean(0), atol=4)
    np.testing.assert_allclose(np.cov(matched, rowvar=False), np.cov(c, rowvar=False), rtol=0.15, atol=40)


def test_match_mode_runs(engine: Engine, content: np.ndarray, style: np.ndarray) -> None:
    assert engine.transfer(content, [style], Params(size=32, iterations=2, color="match")).image.shape == (24, 32, 3)


@pytest.mark.pinned_precision
@pytest.mark.parametrize("normalization", ["seed", "invariant"])
def test_mean_std_style_loss_equals_a_numpy_computation(engine: Engine, normalization: str) -> None:
    h = w = 32
    content, style, x_rgb = random_rgb(h, w, 1), random_rgb(h, w, 2), random_rgb(h, w, 3)
    layers = ("block1_conv1", "block2_conv1", "block3_conv1")
    params = Params(
        size=(h, w),
        style_layers=layers,
        style_loss="mean_std",
        normalization=normalization,
        precision="float32",
        style_layer_weights="decreasing",
    )
    _, parts, _ = engine.prepare(content, [style], params).loss_and_grad(preprocess(x_rgb))

    def stats(rgb: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
        out = []
        for f in engine._features(params, rgb)[1:]:
            flat = np.asarray(f, np.float64).reshape(-1, f.shape[-1])
            mu = flat.mean(0)
            out.append((flat.T @ flat / len(flat), np.outer(mu, mu), (flat**2).mean(0) - mu**2, len(flat)))
        return out

    expected = 0.0
    for weight, (ts, tm, tv, n), (gs, gm, gv, _) in zip(params.layer_weights, stats(style), stats(x_rgb)):
        c = ts.shape[0]

        def dist(a: np.ndarray, b: np.ndarray, n: int = n, c: int = c) -> float:
            if normalization == "seed":
                return float(np.sum((n * (a - b)) ** 2)) / (36.0 * (h * w) ** 2)
            return float(np.mean(((a - b) / c) ** 2))

        expected += weight * (dist(ts, gs) + dist(tm, gm) + dist(tv, gv))
    assert parts[1] == pytest.approx(params.style_weight * expected, rel=2e-3)


def test_layer_weight_presets() -> None:
    assert Params().layer_weights == (0.2,) * 5
    decreasing = Params(style_layer_weights="decreasing").layer_weights
    assert decreasing[0] / decreasing[1] == pytest.approx(4) and sum(decreasing) == pytest.approx(1)
    gatys = Params(style_layer_weights="gatys").layer_weights
    assert gatys[0] / gatys[1] == pytest.approx((128 / 64) ** 2) and sum(gatys) == pytest.approx(1)
    assert Params(style_layer_weights=(1.0, 1.0, 2.0, 0.0, 0.0)).layer_weights == (0.25, 0.25, 0.5, 0.0, 0.0)


def test_early_stop_on_tolerance(engine: Engine, content: np.ndarray, style: np.ndarray) -> None:
    params = Params(size=32, iterations=200, tolerance=0.5, tolerance_window=2)  # stop once 2 steps gain < 50%
    result = engine.transfer(content, [style], params)
    assert result.stopped == "tolerance" and 3 <= result.iterations < 200
    losses = [p.loss for p in result.history]
    assert losses[-3] - losses[-1] < 0.5 * losses[-3]


def test_snapshots_every_k_iterations(engine: Engine, content: np.ndarray, style: np.ndarray) -> None:
    shots: list[tuple[int, tuple[int, ...]]] = []
    engine.transfer(
        content,
        [style],
        Params(size=32, iterations=6),
        on_snapshot=lambda n, img: shots.append((n, img.shape)),
        snapshot_every=2,
    )
    assert shots == [(2, (24, 32, 3)), (4, (24, 32, 3)), (6, (24, 32, 3))]


@pytest.mark.pinned_precision
def test_invariant_balance_does_not_drift_between_levels(engine: Engine) -> None:
    """The same picture at the sizes of a 3-level pyramid: the content/style balance stays put with
    `invariant`, and drifts with `seed` (whose content term is a sum over pixels)."""
    content, style, gen = random_rgb(64, 64, 1), random_rgb(64, 64, 2), random_rgb(64, 64, 7)
    drift = {}
    for norm in ("seed", "invariant"):
        params = Params(
            size=64,
            scales=3,
            normalization=norm,
            precision="float32",
            content_layers=("block3_conv1",),
            style_layers=("block1_conv1", "block2_conv1", "block3_conv1"),
        )
        balances = []
        for level in engine.plan(content.shape[:2], params):
            size = (level.height, level.width)
            problem = engine.prepare(content, [style], params, size=size)
            x = np.asarray(Image.fromarray(gen).resize(size[::-1], Image.Resampling.BICUBIC))
            c, s, _ = problem.loss_and_grad(preprocess(x))[1]
            balances.append(c / s)
        drift[norm] = max(balances) / min(balances)
    assert drift["invariant"] < 1.6 < drift["seed"]
