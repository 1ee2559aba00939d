"""Exact tiled evaluation: the loss and gradient of the whole image, a tile at a time, on one or
several devices; automatic tiles from the memory limit; tiled jobs through a real worker."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest

from producer.core.params import Params
from worker.nst import budget, tiling

# Without the total variation where it would dwarf the network's share of the gradient.
LAYER_CHOICES = [
    {"tv_weight": 0.0},  # the seed's layers
    {"normalization": "invariant"},
    {"style_loss": "mean_std", "tv_weight": 0.0},
    {
        "content_layers": ["block4_conv2"],
        "style_layers": ["block1_conv1", "block3_conv2", "block5_conv4"],
        "tv_weight": 0.0,
    },
    {
        "normalization": "invariant",
        "style_loss": "mean_std",
        "content_layers": ["block2_conv2"],
        "style_layers": ["block2_conv1"],
    },
    {"style_loss": "w2", "tv_weight": 0.0},
    {"normalization": "invariant", "style_loss": "w2", "style_layers": ["block1_conv1", "block3_conv1"]},
]


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-30))


def tiled_and_whole(engine: Any, params: Params) -> tuple[Any, Any]:
    """(loss, parts, gradient) of one image evaluated whole and in 64 px tiles."""
    rng = np.random.default_rng(0)
    content = rng.integers(0, 256, (160, 224, 3), dtype=np.uint8)
    style = rng.integers(0, 256, (120, 150, 3), dtype=np.uint8)
    whole = engine.prepare(content, [style], params.replace(tile=0))
    tiled = engine.prepare(content, [style], params.replace(tile=64))
    assert whole.tile == 0 and tiled.tile == 64
    x = whole.x0 + rng.normal(0, 3, whole.x0.shape).astype(np.float32)
    return whole.loss_and_grad(x), tiled.loss_and_grad(x)


@pytest.mark.pinned_precision
@pytest.mark.parametrize(
    "extra",
    LAYER_CHOICES,
    ids=["seed", "invariant-with-tv", "mean_std", "deep-layers", "shallow", "w2", "w2-invariant"],
)
def test_tiled_loss_and_gradient_equal_the_whole_images(engine, extra) -> None:
    """Exact in float32 (pinned: ``auto`` is bfloat16 on a CPU with AVX512_BF16)."""
    params = Params(size=(160, 224), precision="float32", **extra)
    (loss_w, parts_w, grad_w), (loss_t, parts_t, grad_t) = tiled_and_whole(engine, params)
    assert abs(loss_w - loss_t) <= 1e-4 * abs(loss_w)
    for part_w, part_t in zip(parts_w, parts_t):  # content, style and tv each, not only their sum
        assert abs(part_w - part_t) <= 1e-4 * abs(part_w) + 1e-30
    assert relative(grad_w, grad_t) <= 1e-4


@pytest.mark.pinned_precision
@pytest.mark.parametrize("extra", [LAYER_CHOICES[0], LAYER_CHOICES[3]], ids=["seed", "deep-layers"])
def test_tiled_bfloat16_adds_no_error_beyond_bfloat16_s_own(engine, extra) -> None:
    """bfloat16 (run on every machine: emulated where it is not native) keeps 8 significant bits,
    so tiled and whole bfloat16 cannot agree to float32's 1e-4 (a crop's convolutions round
    differently from the whole image's). What tiling must not do is add error: against the
    float32 result, tiled bfloat16 is as close as whole bfloat16 is."""
    params = Params(size=(160, 224), **extra)
    (loss32, parts32, grad32), _ = tiled_and_whole(engine, params.replace(precision="float32"))
    (loss_w, parts_w, grad_w), (loss_t, parts_t, grad_t) = tiled_and_whole(engine, params.replace(precision="bfloat16"))
    bf16_unit = 2.0**-8  # bfloat16's relative rounding unit
    assert abs(loss_t - loss32) <= max(2 * abs(loss_w - loss32), bf16_unit * loss32)
    for p32, p_w, p_t in zip(parts32, parts_w, parts_t):
        assert abs(p_t - p32) <= max(2 * abs(p_w - p32), bf16_unit * abs(p32)) + 1e-30
    # The whole image's gradient comes back rounded to bfloat16; the tiles' sum is float32.
    assert relative(grad32, grad_t) <= 1.5 * relative(grad32, grad_w)
    cosine = float(np.sum(grad_t * grad32) / (np.linalg.norm(grad_t) * np.linalg.norm(grad32)))
    assert cosine > 0.99


def test_cores_partition_the_image_and_crops_line_up_with_the_pooling() -> None:
    layers = ["block5_conv2", "block1_conv1", "block5_conv1"]
    assert tiling.halo_px(layers) == 96 and tiling.halo_px(["block5_conv4"]) == 128
    assert tiling.halo_px(["block1_conv1"]) == 1 and tiling.alignment(layers) == 16
    tiles = tiling.grid(200, 330, 64, layers)
    covered = np.zeros((200, 330), int)
    for t in tiles:
        top, bottom, left, right = t.core
        covered[top:bottom, left:right] += 1
        crop_top, crop_bottom, crop_left, _ = t.crop
        assert crop_top % 16 == 0 and crop_left % 16 == 0
        assert crop_top == max(0, top - 96) and crop_bottom == min(200, bottom + 96)
    assert (covered == 1).all()


def test_two_devices_give_the_loss_and_gradient_of_one(weights_file) -> None:
    """The CPU split into two logical devices: tiles spread over both equal one device's."""
    code = textwrap.dedent(
        f"""
        import json, numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from producer.core.params import Params
        from worker.nst.engine import Engine
        rng = np.random.default_rng(1)
        content = rng.integers(0, 256, (96, 160, 3), dtype=np.uint8)
        style = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        params = Params(size=(96, 160), tile=64)
        one = Engine(weights={weights_file!r}, devices=["/device:CPU:0"])
        two = Engine(weights={weights_file!r})
        assert two.devices == ["/device:CPU:0", "/device:CPU:1"], two.devices
        a, b = one.prepare(content, [style], params), two.prepare(content, [style], params)
        x = a.x0 + rng.normal(0, 3, a.x0.shape).astype(np.float32)
        la, pa, ga = a.loss_and_grad(x)
        lb, pb, gb = b.loss_and_grad(x)
        print(json.dumps({{"loss": [la, lb], "grad": float(np.abs(ga - gb).max() / np.abs(ga).max())}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    (la, lb), grad = result["loss"], result["grad"]
    assert abs(la - lb) <= 1e-5 * abs(la) and grad <= 1e-5


def test_an_image_too_large_for_the_memory_limit_runs_tiled_to_the_same_result(weights_file) -> None:
    from worker.nst.engine import Engine

    rng = np.random.default_rng(2)
    content = rng.integers(0, 256, (128, 192, 3), dtype=np.uint8)
    style = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    # Shallow layers: a small halo, so tiles of a small image do save memory.
    params = Params(
        size=(128, 192), iterations=3, content_layers=("block2_conv2",), style_layers=("block1_conv1", "block2_conv1")
    )
    halo = tiling.halo_px(params.content_layers + params.style_layers)
    whole_needs = budget.estimate_bytes(params.replace(tile=0), 128 * 192)
    limit = whole_needs // 2
    small = Engine(weights=weights_file, memory_limit_bytes=limit)
    tile = small.tile_for(params, (128, 192))
    assert 64 <= tile < 192
    assert budget.estimate_bytes(params, 128 * 192, limit, halo) <= limit < whole_needs
    tiled = small.transfer(content, [style], params)
    whole = Engine(weights=weights_file).transfer(content, [style], params)
    assert tiled.iterations == whole.iterations == 3
    assert abs(tiled.loss - whole.loss) <= 1e-3 * whole.loss
    assert np.abs(tiled.image.astype(int) - whole.image.astype(int)).max() <= 2
    assert Engine(weights=weights_file, memory_limit_bytes=limit).tile_for(Params(size=(128, 192)), (128, 192)) == 0


def test_lbfgs_memory_sets_scipys_correction_pairs_and_the_budget(engine) -> None:
    rng = np.random.default_rng(3)
    content = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    problem = engine.prepare(content, [content], Params(size=48, lbfgs_memory=3))
    assert problem.lbfgs_memory == 3 and problem.optimize(3).iterations == 3
    side = 4096 * 4096
    assert budget.lbfgs_bytes_per_pixel(Params()) * side == 9_663_676_416  # 24 float64 copies of the image
    assert budget.lbfgs_bytes_per_pixel(Params(lbfgs_memory=3)) * side < 4.1e9
